"""``deterministic_subsetting``: each channel takes the slice of the nodes that its place
among the service's channels gives it (pure).

The nodes of a group, sorted by address, form a ring; the channels of the service, sorted by
the ids of their client keys in etcd, are spread evenly around it: channel ``i`` of ``M``
takes the ``subsetSize`` nodes from position ``floor(i * N / M)`` on. This is Finagle's
deterministic aperture (a "peer ring" over a "destination ring") with whole nodes, and it
balances like Google's deterministic subsetting (SRE book, ch. 20): every node is in
``floor(M * k / N)`` or ``ceil(M * k / N)`` subsets. Unlike Google's rounds of shuffled lists,
a change moves little: a node joining or leaving shifts each slice by at most one place, and
a channel joining or leaving moves every place by less than ``N / M`` nodes.

**With a locality** (``zones``), each locality's nodes form a ring of their own, and the
channel's place is its rank among the channels *of its own locality*. On every ring it takes
the window ``[place, place + k / N)`` of the way round: ``k * N_z / N`` nodes of a locality
holding ``N_z`` of the ``N`` nodes (rounded down or up by the window's position, at least one
of its own), so a subset is the group in miniature - the locality rules (prefer_local,
zone_aware) see the group's proportions in it - and every node is in ``M_c * k / N`` subsets
of the ``M_c`` channels of each locality ``c``, give or take one: the channels of a zone
cover its nodes, and every other zone's, evenly. The size is ``k`` give or take one per
locality beyond the first. docs/scale.md has the measured tables.

The place comes from the view of the client keys (``clients.ClientView.place``); until the
first view, a stand-in drawn at random for this channel.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..clients import ClientView
from ..config import PolicySettings
from ._subsetting import Ring, SubsettingPolicy, Zones

__all__ = ["DeterministicSubsettingPolicy", "deterministic_subset", "zoned_rings"]


def _ring(addresses: Sequence[str], start: int, count: int) -> Ring:
    """``count`` nodes of the ring ``addresses`` from ``start``, then as many to reach for
    past unreachable ones."""
    n = len(addresses)
    return Ring(tuple(addresses[(start + i) % n] for i in range(min(n, 2 * count))), count)


def deterministic_subset(addresses: Sequence[str], place: tuple[int, int], size: int) -> list[str]:
    """The ``size`` consecutive ``addresses`` (sorted; a ring) starting at the fraction
    ``place = (num, den)`` of the way round: all of them when there are no more than ``size``."""
    n = len(addresses)
    if n <= size:
        return list(addresses)
    num, den = place
    start = num * n // den  # exact integer arithmetic: every channel agrees on the boundaries
    return [addresses[(start + i) % n] for i in range(size)]


def zoned_rings(
    addresses: Sequence[str], zones: Zones, place: tuple[int, int], size: int
) -> list[Ring]:
    """One ring per locality of ``addresses`` (sorted): the nodes whose place on it lies in
    ``[place, place + size / N)`` (at least one of the caller's own locality)."""
    n = len(addresses)
    num, den = place
    by_zone: dict[str, list[str]] = {}
    for address in addresses:
        by_zone.setdefault(zones.of.get(address, ""), []).append(address)
    rings = []
    for zone, members in sorted(by_zone.items()):
        m = len(members)
        start = num * m // den
        end = (num * m * n + size * m * den) // (den * n)  # floor((place + size / n) * m)
        count = min(max(end - start, 1 if zone == zones.own else 0), m)
        if count:
            rings.append(_ring(members, start, count))
    return rings


class DeterministicSubsettingPolicy(SubsettingPolicy):
    """Builds the child policy's pickers over this channel's deterministic subsets."""

    name = "deterministic_subsetting"
    needs_clients = True

    def __init__(self, settings: Mapping[str, Any] | PolicySettings | None = None) -> None:
        super().__init__(settings)
        self._stand_in = (random.getrandbits(64), 1 << 64)

    def subset(self, addresses: Sequence[str], clients: ClientView | None) -> list[str]:
        """This channel's slice of ``addresses``."""
        place = clients.place() if clients is not None else self._stand_in
        return deterministic_subset(addresses, place, self.subset_size)

    def rings(
        self, addresses: Sequence[str], clients: ClientView | None, zones: Zones | None = None
    ) -> list[Ring]:
        """This channel's slice of ``addresses`` as one ring, or one per locality."""
        size = self.subset_size
        if zones is None:
            place = clients.place() if clients is not None else self._stand_in
            n = len(addresses)
            num, den = place
            return [_ring(addresses, num * n // den if n > size else 0, min(n, size))]
        place = clients.place(zones.key, zones.own) if clients is not None else self._stand_in
        return zoned_rings(addresses, zones, place, size)
