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

**With a locality** (``zones``), the channel's place is its rank among the channels *of its
own locality*, and it takes ``k`` consecutive nodes of a ring that interleaves the
localities, each in address order: their nodes merged by where they stand on their own rings
(node ``j`` of ``N_z`` at ``(j + 1/2) / N_z`` of the way round) - or, where that leaves some
slice short of its own locality's share, the others merged and its own spread evenly among
them. A subset then holds exactly ``k`` nodes, and is the group in miniature: ``k * N_z / N``
nodes of each locality, its own rounded down or up (and at least one), the others within one
more, so the locality rules (prefer_local, zone_aware) see the group's proportions in it. As
the ring is the same for every channel of a locality and they stand evenly around it, each
node is in ``M_c * k / N`` subsets of the ``M_c`` channels of each locality ``c``, give or take
one (and of all ``M`` channels, give or take one, where the localities share one ring and
have as many channels each). A channel whose locality is too small for a node in every slice
(``k * N_c < N``) swaps the last of its slice for the next of its own. docs/scale.md has the
measured tables.

The place comes from the view of the client keys (``clients.ClientView.place``); until the
first view, a stand-in drawn at random for this channel.
"""

from __future__ import annotations

import math
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


def _merged(by_zone: Mapping[str, Sequence[str]], skip: str | None = None) -> list[tuple[str, int]]:
    """Every locality's nodes (but ``skip`` 's) as (locality, index in it), merged by their
    places on their own rings, ``(2j + 1) / 2 N_z`` of the way round (exact: scaled to
    integers; ties by locality)."""
    scale = math.lcm(*(2 * len(members) for members in by_zone.values()))
    return [
        (zone, j)
        for _, zone, j in sorted(
            ((2 * j + 1) * (scale // (2 * len(members))), zone, j)
            for zone, members in by_zone.items()
            if zone != skip
            for j in range(len(members))
        )
    ]


def _holds_its_share(ring: Sequence[tuple[str, int]], own: str, size: int) -> bool:
    """True when every ``size`` consecutive places of ``ring`` hold ``own`` 's share of them
    rounded down or up."""
    n = len(ring)
    mine = [zone == own for zone, _ in ring]
    count, total = sum(mine[:size]), sum(mine)
    low, high = size * total // n, -(-size * total // n)
    for start in range(n):
        if not low <= count <= high:
            return False
        count += mine[(start + size) % n] - mine[start]
    return True


def _ring_of(by_zone: Mapping[str, Sequence[str]], own: str, size: int) -> list[tuple[str, int]]:
    """The ring the channels of locality ``own`` take their slices of: every locality merged
    (:func:`_merged`), when that spreads ``own`` evenly enough for every slice to hold its
    share; else the others merged and ``own`` 's ``i``-th node after ``floor((2i + 1) O / 2
    N_own)`` of their ``O`` nodes."""
    ring = _merged(by_zone)
    if own not in by_zone or _holds_its_share(ring, own, size):
        return ring
    others = _merged(by_zone, skip=own)
    mine = len(by_zone[own])
    ring, taken = [], 0
    for i in range(mine):
        upto = (2 * i + 1) * len(others) // (2 * mine)
        ring.extend(others[taken:upto])
        ring.append((own, i))
        taken = upto
    ring.extend(others[taken:])
    return ring


def zoned_rings(
    addresses: Sequence[str], zones: Zones, place: tuple[int, int], size: int
) -> list[Ring]:
    """One ring per locality of ``addresses`` (sorted): its nodes among the ``size``
    consecutive ones from ``place`` of the ring of ``zones.own`` 's channels (at least one of
    ``zones.own`` when it has nodes), or all of them when there are no more than ``size``."""
    by_zone: dict[str, list[str]] = {}
    for address in addresses:
        by_zone.setdefault(zones.of.get(address, ""), []).append(address)
    n = len(addresses)
    if n <= size:
        return [_ring(members, 0, len(members)) for _, members in sorted(by_zone.items())]
    ring = _ring_of(by_zone, zones.own, size)
    num, den = place
    start = num * n // den  # exact integer arithmetic: every channel agrees on the boundaries
    window = [ring[(start + i) % n] for i in range(size)]
    if zones.own in by_zone and all(zone != zones.own for zone, _ in window):
        # Its locality too small for one in every slice: the next of its own takes the last place.
        window[-1] = next(
            ring[(start + size + i) % n]
            for i in range(n)
            if ring[(start + size + i) % n][0] == zones.own
        )
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for zone, j in window:
        first.setdefault(zone, j)
        count[zone] = count.get(zone, 0) + 1
    return [_ring(by_zone[zone], first[zone], count[zone]) for zone in sorted(count)]


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
