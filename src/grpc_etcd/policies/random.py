"""``random`` (alias ``version``, the seed's policy and the default): a random node, in
proportion to node weights.

All weights equal (the default) is the seed's uniform pick: one random index. Otherwise a
binary search over the cumulative weights, O(log n); weight 0 gets no calls (a drain).
"""

from __future__ import annotations

import random as _random
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from typing import Any, Generic, TypeVar

from ..config import PolicySettings, SlowStartSettings
from ..routing import CallInfo
from ._picks import PickCache
from ._slow_start import slow_start
from ._weights import weights_of
from .base import Endpoint, Pick, Picker

__all__ = ["RandomPicker", "RandomPolicy"]

T = TypeVar("T")


class RandomPicker(Generic[T]):
    """A random pick among fixed endpoints, weighted by their nodes' weights."""

    __slots__ = ("_cumulative", "_n", "_picks", "_total")

    def __init__(self, ready: Sequence[Endpoint[T]], cache: PickCache | None = None) -> None:
        weights = weights_of(ready)
        self._cumulative: tuple[int, ...] | None = None
        self._total = 0.0
        if weights is None or len(set(weights)) == 1:
            self._picks = (cache or PickCache()).picks(ready)
        else:
            kept = [(e, w) for e, w in zip(ready, weights, strict=True) if w > 0]
            self._picks = tuple(Pick(e.subchannel) for e, _ in kept)
            self._cumulative = tuple(accumulate(w for _, w in kept))
            self._total = float(self._cumulative[-1])
        self._n = len(self._picks)

    def pick(self, call: CallInfo) -> Pick[T]:
        """A random endpoint (weighted)."""
        if self._cumulative is None:
            return self._picks[int(_random.random() * self._n)]
        return self._picks[bisect_right(self._cumulative, _random.random() * self._total)]


class RandomPolicy:
    """Builds :class:`RandomPicker`s. ``name`` is ``random`` or its alias ``version``;
    ``clock`` tells slow start how long each node has been READY."""

    def __init__(
        self,
        settings: Mapping[str, Any] | PolicySettings | None = None,
        *,
        name: str = "random",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = SlowStartSettings.of(name, settings)
        self.name = name
        self._picks = PickCache()
        self._clock = clock

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """A weighted random picker over ``ready``."""
        picker = RandomPicker(ready, self._picks)
        return slow_start(picker, ready, self.settings.slow_start_config, self._clock)
