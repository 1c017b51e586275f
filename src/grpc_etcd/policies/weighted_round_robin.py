"""``weighted_round_robin``: each node in turn, as often as its weight says.

Weights are ``metadata["weight"]`` (default 1; 0 gets no calls). The order is an earliest-
deadline-first schedule computed once per build: a node of weight w is due at (k + 1/2) / w
for k < w, so its turns are spread over the cycle (the smoothness nginx's smooth WRR gives)
and a pick is one index into the schedule, whatever the number of nodes. Weights are reduced
by their gcd; past ``MAX_SCHEDULE`` slots they are scaled down (every node keeps >= 1 slot).
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Mapping, Sequence
from itertools import count
from typing import Any, Generic, TypeVar

from ..config import validate_policy_settings
from ..routing import CallInfo
from ._weights import weights_of
from .base import Endpoint, Pick

__all__ = ["MAX_SCHEDULE", "WeightedRoundRobinPicker", "WeightedRoundRobinPolicy"]

T = TypeVar("T")

#: Longest schedule built (slots), beyond the one slot each node needs: bounds build time.
MAX_SCHEDULE = 16384


def schedule(weights: Sequence[int]) -> list[int]:
    """Indexes of ``weights`` in EDF order, each index as many times as its (reduced) weight."""
    divisor = math.gcd(*weights)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    limit = MAX_SCHEDULE + len(reduced)
    if total > limit:
        reduced = [max(1, round(w * limit / total)) if w else 0 for w in reduced]
    slots = [((k + 0.5) / w, i) for i, w in enumerate(reduced) for k in range(w)]
    slots.sort()
    return [i for _, i in slots]


class WeightedRoundRobinPicker(Generic[T]):
    """Walks a precomputed schedule; ``next()`` on an ``itertools.count`` is atomic."""

    __slots__ = ("_n", "_next", "_picks")

    def __init__(self, ready: Sequence[Endpoint[T]]) -> None:
        ordered = sorted(ready, key=lambda e: e.node.address)
        picks = [Pick(e.subchannel) for e in ordered]
        weights = weights_of(ordered)
        order = range(len(picks)) if weights is None else schedule(weights)
        self._picks = tuple(picks[i] for i in order)
        self._n = len(self._picks)
        self._next = count(_random.randrange(self._n)).__next__

    def pick(self, call: CallInfo) -> Pick[T]:
        """The next endpoint of the schedule."""
        return self._picks[self._next() % self._n]


class WeightedRoundRobinPolicy:
    """Builds :class:`WeightedRoundRobinPicker`s."""

    name = "weighted_round_robin"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        validate_policy_settings(self.name, settings)

    def build(self, ready: Sequence[Endpoint[T]]) -> WeightedRoundRobinPicker[T]:
        """A picker that walks ``ready`` in proportion to their weights."""
        return WeightedRoundRobinPicker(ready)
