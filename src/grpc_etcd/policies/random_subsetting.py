"""``random_subsetting``: gRFC A68, rendezvous hashing with a salt of the channel's own (pure).

Each address is hashed with the channel's random salt; the channel keeps the ``subsetSize``
addresses with the lowest hashes. A node joining or leaving changes at most one member of any
channel's subset (the others' hashes do not move), and no coordination is needed; the price is
balance: the number of channels per node is binomial, so it evens out only when
``clients * subsetSize / nodes`` is large (docs/scale.md measures it). A68 hashes with
MurmurHash3 (grpc-java now with XXH64 and a random seed); any uniform keyed hash has the same
properties, and this one uses the standard library's BLAKE2b keyed with the salt. Past its
unreachable members a subset reaches for the next lowest hashes (``_subsetting.take``).
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..clients import ClientView
from ..config import PolicySettings
from ._subsetting import Ring, SubsettingPolicy, Zones

__all__ = ["RandomSubsettingPolicy", "random_subset"]

#: A68's salt is 32 random bytes; BLAKE2b takes a key of up to 64.
SALT_BYTES = 32


def random_subset(addresses: Sequence[str], salt: bytes, size: int) -> list[str]:
    """The ``size`` addresses whose hash under ``salt`` is lowest (all of them when there are
    no more than ``size``), in hash order."""
    if len(addresses) <= size:
        return list(addresses)
    return _lowest(addresses, salt, size)


def _lowest(addresses: Sequence[str], salt: bytes, size: int) -> list[str]:
    def score(address: str) -> bytes:
        return hashlib.blake2b(address.encode(), digest_size=8, key=salt).digest()

    return heapq.nsmallest(size, addresses, key=score)


class RandomSubsettingPolicy(SubsettingPolicy):
    """Builds the child policy's pickers over this channel's rendezvous-hashed subsets."""

    name = "random_subsetting"

    def __init__(self, settings: Mapping[str, Any] | PolicySettings | None = None) -> None:
        super().__init__(settings)
        #: This channel's salt, drawn once (a new config with other settings draws anew).
        self.salt = os.urandom(SALT_BYTES)

    def subset(self, addresses: Sequence[str], clients: ClientView | None) -> list[str]:
        """This channel's rendezvous subset of ``addresses`` (``clients`` is not needed)."""
        return random_subset(addresses, self.salt, self.subset_size)

    def rings(
        self, addresses: Sequence[str], clients: ClientView | None, zones: Zones | None = None
    ) -> list[Ring]:
        """The rendezvous subset, then the next lowest hashes to reach for (A68 draws across
        the localities at random: ``zones`` is not needed)."""
        size = self.subset_size
        if len(addresses) <= size:
            return [Ring(tuple(addresses), len(addresses))]
        return [Ring(tuple(_lowest(addresses, self.salt, 2 * size)), size)]
