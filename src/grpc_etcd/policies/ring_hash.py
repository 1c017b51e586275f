"""``ring_hash`` (gRPC A42): the node that owns the call's hash key on a ring of virtual nodes.

Ring sizing follows A42's bounds with one change: every node gets ``weight x k`` points (weights
reduced by their gcd), ``k`` being the largest power of two that keeps the ring within
``min(2 x minRingSize, maxRingSize)``. A42 lets every node's count move a little whenever one
node comes or goes, and the keys of a dropped point move to whichever node is next; with ``k``
a power of two it stays put until the ring size crosses a power of two, so adding a node
moves only the keys that node now owns (about 1/n of them) and nothing between the others.
When even one point per weight unit exceeds ``maxRingSize``, points are handed out by A42's
cumulative rule (some nodes then get none). A key belongs to the first point at or after its
hash (a binary search). The key is ``route(hash_key=...)``, else the
``requestHashHeader`` metadata value; a call without a key goes to a random point.

The hash is BLAKE2b-64 of ``"<address>_<n>"`` (A42 uses xxHash64, which the standard library
lacks): stable across processes, so every client of a service agrees on the owner of a key.
Each address's points are kept by the policy across rebuilds.
"""

from __future__ import annotations

import math
import random as _random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any, Generic, TypeVar

from ..config import PolicySettings, RingHashSettings
from ..routing import CallInfo
from ._weights import weights_of
from .base import Endpoint, Pick

__all__ = ["HASH_KEY", "RingHashPicker", "RingHashPolicy", "hash64", "ring_counts"]

T = TypeVar("T")

#: The ``route()`` value that carries a call's hash key: ``route(hash_key="user-42")``.
HASH_KEY = "hash_key"
# Bound on the per-picker cache of key hashes (keys are user ids and the like: they repeat).
_MAX_CACHED_KEYS = 4096


def ring_counts(units: Sequence[int], min_ring_size: int, max_ring_size: int) -> list[int]:
    """How many ring points each node gets, for integer weight ``units`` (see the module)."""
    total = sum(units)
    limit = min(2 * min_ring_size, max_ring_size)
    if total <= limit:
        per_unit = 1 << (limit // total).bit_length() - 1
        return [u * per_unit for u in units]
    counts = []
    target = 0.0
    given = 0
    for u in units:  # A42's cumulative rule, for rings too small for one point per unit
        target += max_ring_size * u / total
        counts.append(math.ceil(target) - given)
        given += counts[-1]
    return counts


def hash64(data: str | bytes) -> int:
    """The ring's 64-bit hash of ``data``."""
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(blake2b(raw, digest_size=8).digest(), "big")


class RingHashPicker(Generic[T]):
    """A sorted ring of points; each pick hashes its key (cached) and bisects the ring."""

    __slots__ = ("_header", "_keys", "_n", "_picks", "_points")

    def __init__(self, ready: Sequence[Endpoint[T]], policy: RingHashPolicy) -> None:
        weights = weights_of(ready) or [1] * len(ready)
        kept = [(e, w) for e, w in zip(ready, weights, strict=True) if w > 0]
        divisor = math.gcd(*(w for _, w in kept))
        units = [w // divisor for _, w in kept]
        counts = ring_counts(units, policy.min_ring_size, policy.max_ring_size)
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
            for name, value in call.metadata:
                if name == self._header:
                    key = value
                    break
        if key is None:
            return self._picks[int(_random.random() * self._n)]
        point = self._keys.get(key)
        if point is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            point = self._keys[key] = hash64(key)
        index = bisect_left(self._points, point)
        return self._picks[index if index < self._n else 0]


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
            points = points + [hash64(f"{address}_{i}") for i in range(len(points), count)]
            self._points[address] = points
        return points[:count]

    def build(self, ready: Sequence[Endpoint[T]]) -> RingHashPicker[T]:
        """A ring over ``ready``."""
        self._largest = max(self._largest, len(ready))
        if len(self._points) > 4 * self._largest + 1024:
            live = {e.node.address for e in ready}
            self._points = {a: p for a, p in self._points.items() if a in live}
        return RingHashPicker(ready, self)
