"""``deterministic_subsetting``: each channel takes the slice of the nodes that its place
among the service's channels gives it (pure).

The nodes of a group, sorted by address, form a ring; the channels of the service, sorted by
the ids of their client keys in etcd, are spread evenly around it: channel ``i`` of ``M``
takes the ``subsetSize`` nodes from position ``floor(i * N / M)`` on. This is Finagle's
deterministic aperture (a "peer ring" over a "destination ring") with whole nodes, and it
balances like Google's deterministic subsetting (SRE book, ch. 20): every node is in
``floor(M * k / N)`` or ``ceil(M * k / N)`` subsets. Unlike Google's rounds of shuffled lists,
a change moves little: a node joining or leaving shifts each slice by at most one place, and
a channel joining or leaving moves every place by less than ``N / M`` nodes. docs/scale.md
has the measured table and the comparison with A68, go-zero and Kratos.

The place comes from the view of the client keys (``clients.ClientView.place``); until the
first view, a stand-in drawn at random for this channel.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..clients import ClientView
from ..config import PolicySettings
from ._subsetting import SubsettingPolicy

__all__ = ["DeterministicSubsettingPolicy", "deterministic_subset"]


def deterministic_subset(addresses: Sequence[str], place: tuple[int, int], size: int) -> list[str]:
    """The ``size`` consecutive ``addresses`` (sorted; a ring) starting at the fraction
    ``place = (num, den)`` of the way round: all of them when there are no more than ``size``."""
    n = len(addresses)
    if n <= size:
        return list(addresses)
    num, den = place
    start = num * n // den  # exact integer arithmetic: every channel agrees on the boundaries
    return [addresses[(start + i) % n] for i in range(size)]


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
