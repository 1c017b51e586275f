"""``weighted_round_robin``: each node in turn, as often as its weight says.

Weights are ``metadata["weight"]`` (default 1; 0 gets no calls). The order is an earliest-
deadline-first schedule computed once per build: a node of weight w is due at (k + 1/2) / w
for k < w, so its turns are spread over the cycle (the smoothness nginx's smooth WRR gives)
and a pick is one index into the schedule, whatever the number of nodes. Weights are reduced
by their gcd; past ``MAX_SCHEDULE`` slots they are scaled down (every node keeps >= 1 slot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from ..config import SlowStartSettings
from ._stateless import StatelessPolicy
from ._weights import weights_of
from .base import Endpoint, Pick
from .round_robin import RoundRobinPicker

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


class WeightedRoundRobinPicker(RoundRobinPicker[T]):
    """Walks a precomputed schedule; ``next()`` on an ``itertools.count`` is atomic."""

    __slots__ = ()

    def __init__(self, ready: Sequence[Endpoint[T]]) -> None:
        ordered = sorted(ready, key=lambda e: e.node.address)
        picks = [Pick(e.subchannel) for e in ordered]
        weights = weights_of(ordered)
        order = range(len(picks)) if weights is None else schedule(weights)
        self._cycle([picks[i] for i in order])


class WeightedRoundRobinPolicy(StatelessPolicy):
    """Builds :class:`WeightedRoundRobinPicker`s: ``ready`` in proportion to their weights."""

    name = "weighted_round_robin"
    picker = WeightedRoundRobinPicker
    settings_model = SlowStartSettings
