"""``ring_hash`` as gRPC A42 builds it: the node that owns the call's hash key on a ring.

The ring is grpc's, point for point (grpc core ``ring_hash.cc``, grpc-go ``ringhash/ring.go``),
so a key lands on the same node from our channel and from any gRPC client that ``grpc-etcd xds``
serves: the nodes in the order the control plane sends them (by etcd key), weights normalized
to sum 1, ``scale = min(ceil(min_weight x minRingSize) / min_weight, maxRingSize)`` with both
sizes capped at grpc's 4,096, and each node, in turn, given points while a running count stays
below the running target ``sum(scale x weight)``. A node's points are the XXH64 (seed 0) of
``"<address>_<n>"``, ``n`` counting from 0, the address written as grpc writes it. A key
belongs to the first point at or after its hash (a binary search), the first point after the
last. The key's hash is the XXH64 of ``route(hash_key=...)``, else of the
``requestHashHeader`` metadata value (several values joined by ``,``, as grpc joins them); a
call without a key goes to a random point.

One difference is ours: a policy sees only the usable nodes, so a node that fails drops off
the ring until it is back (grpc keeps it and walks past it); the ring then has a new scale, and
besides the failed node's keys about 1/n of the others move while it is away.
"""

from __future__ import annotations

import ipaddress
import math
import random as _random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from xxhash import xxh64_intdigest

from ..config import PolicySettings, RingHashSettings
from ..node import parse_address
from ..routing import CallInfo
from ._weights import weights_of
from .base import Endpoint, Pick

__all__ = [
    "HASH_KEY",
    "RING_SIZE_CAP",
    "RingHashPicker",
    "RingHashPolicy",
    "hash64",
    "point_key",
    "ring_counts",
]

T = TypeVar("T")

#: The ``route()`` value that carries a call's hash key: ``route(hash_key="user-42")``.
HASH_KEY = "hash_key"
#: grpc caps both ring sizes at this (core's ``GRPC_ARG_RING_HASH_LB_RING_SIZE_CAP`` default,
#: grpc-go's ``GRPC_RING_HASH_CAP``): a larger ``maxRingSize`` builds the same ring.
RING_SIZE_CAP = 4096
# Bound on the per-picker cache of key hashes (keys are user ids and the like: they repeat).
_MAX_CACHED_KEYS = 4096


def hash64(data: str | bytes) -> int:
    """XXH64 of ``data`` (UTF-8 for a str), seed 0: the hash of ring points and call keys."""
    return xxh64_intdigest(data.encode() if isinstance(data, str) else data)


def point_key(address: str) -> str:
    """The address as grpc writes it before ``_<n>``: ``1.2.3.4:80``, ``[::1]:80`` (IPv6
    compressed, as ``inet_ntop`` does); a host name stays as written."""
    try:
        host, port = parse_address(address)
        ip = ipaddress.ip_address(host)
    except ValueError:
        return address
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def ring_counts(weights: Sequence[int], min_ring_size: int, max_ring_size: int) -> list[int]:
    """How many points each node gets, in order, for positive ``weights`` (A42's rule, with
    grpc's floating-point steps, so the counts are grpc's to the point)."""
    total = sum(weights)
    normalized = [w / total for w in weights]
    smallest = min(normalized)
    low = min(min_ring_size, RING_SIZE_CAP)
    high = min(max_ring_size, RING_SIZE_CAP)
    scale = min(math.ceil(smallest * low) / smallest, float(high))
    counts = []
    current = target = 0.0
    for weight in normalized:
        target += scale * weight
        count = 0
        while current < target:
            count += 1
            current += 1.0
        counts.append(count)
    return counts


class RingHashPicker(Generic[T]):
    """A sorted ring of points; each pick hashes its key (cached) and bisects the ring."""

    __slots__ = ("_header", "_keys", "_n", "_picks", "_points")

    def __init__(self, ready: Sequence[Endpoint[T]], policy: RingHashPolicy) -> None:
        ordered = sorted(ready, key=lambda e: e.node.key or e.node.id)
        weights = weights_of(ordered) or [1] * len(ordered)
        kept = [(e, w) for e, w in zip(ordered, weights, strict=True) if w > 0]
        counts = ring_counts([w for _, w in kept], policy.min_ring_size, policy.max_ring_size)
        ring: list[tuple[int, int]] = []
        for index, ((endpoint, _), wanted) in enumerate(zip(kept, counts, strict=True)):
            ring.extend((point, index) for point in policy.points(endpoint.node.address, wanted))
        ring.sort()
        picks = [Pick(e.subchannel) for e, _ in kept]
        self._points = [point for point, _ in ring]
        self._picks = tuple(picks[index] for _, index in ring)
        self._n = len(ring)
        self._header = policy.request_hash_header
        self._keys: dict[str | bytes, int] = {}

    def pick(self, call: CallInfo) -> Pick[T]:
        """The owner of the call's key; a random point when the call has none."""
        key: str | bytes | None = call.route.get(HASH_KEY) if call.route else None
        if key is None and self._header:
            values = [value for name, value in call.metadata if name == self._header]
            if values:
                key = values[0] if len(values) == 1 else _joined(values)
        if key is None:
            return self._picks[int(_random.random() * self._n)]
        point = self._keys.get(key)
        if point is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            point = self._keys[key] = hash64(key)
        index = bisect_left(self._points, point)
        return self._picks[index if index < self._n else 0]


def _joined(values: Sequence[str | bytes]) -> bytes:
    """Several values of one header, as grpc reads them: joined by commas."""
    return b",".join(v.encode() if isinstance(v, str) else v for v in values)


class RingHashPolicy:
    """Builds :class:`RingHashPicker`s; settings ``minRingSize``, ``maxRingSize``,
    ``requestHashHeader``."""

    name = "ring_hash"

    def __init__(self, settings: Mapping[str, Any] | PolicySettings | None = None) -> None:
        self.settings = RingHashSettings.of(self.name, settings)
        self.min_ring_size = self.settings.min_ring_size
        self.max_ring_size = self.settings.max_ring_size
        self.request_hash_header = self.settings.request_hash_header.lower()
        self._points: dict[str, list[int]] = {}
        self._largest = 0

    def points(self, address: str, count: int) -> list[int]:
        """The first ``count`` ring points of ``address`` (computed once, kept across builds)."""
        points = self._points.get(address, [])
        if len(points) < count:
            # A new list, published whole: a build on a call's thread (an offline method's
            # group) may run at the same time as the channel's, and must see the same points.
            prefix = point_key(address) + "_"
            points = points + [hash64(f"{prefix}{i}") for i in range(len(points), count)]
            self._points[address] = points
        return points[:count]

    def build(self, ready: Sequence[Endpoint[T]]) -> RingHashPicker[T]:
        """A ring over ``ready``."""
        self._largest = max(self._largest, len(ready))
        if len(self._points) > 4 * self._largest + 1024:
            live = {e.node.address for e in ready}
            self._points = {a: p for a, p in self._points.items() if a in live}
        return RingHashPicker(ready, self)
