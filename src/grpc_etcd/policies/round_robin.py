"""``round_robin``: each usable node in turn (gRPC's round_robin, grpc-go ``roundrobin.go``).

As in grpc-go, each new picker starts at a random offset, so that after a rebuild every
client does not begin with the same node.
"""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from itertools import cycle
from typing import Generic, TypeVar

from ..config import SlowStartSettings
from ..routing import CallInfo
from ._stateless import StatelessPolicy
from .base import Endpoint, Pick

__all__ = ["RoundRobinPicker", "RoundRobinPolicy"]

T = TypeVar("T")


class RoundRobinPicker(Generic[T]):
    """The endpoints in turn; ``next()`` on an ``itertools.cycle`` is atomic: no lock."""

    __slots__ = ("_turns",)

    def __init__(self, ready: Sequence[Endpoint[T]]) -> None:
        self._cycle([Pick(e.subchannel) for e in sorted(ready, key=lambda e: e.node.address)])

    def _cycle(self, picks: Sequence[Pick[T]]) -> None:
        """Hand out ``picks`` in turn, from a random place in the cycle."""
        start = _random.randrange(len(picks))
        self._turns = cycle([*picks[start:], *picks[:start]])

    def pick(self, call: CallInfo) -> Pick[T]:
        """The next endpoint."""
        return next(self._turns)


class RoundRobinPolicy(StatelessPolicy):
    """Builds :class:`RoundRobinPicker`s: each of ``ready`` in turn."""

    name = "round_robin"
    picker = RoundRobinPicker
    settings_model = SlowStartSettings
