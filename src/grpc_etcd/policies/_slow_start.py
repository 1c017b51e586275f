"""Slow start for any picker (pure): a node READY for ``t`` seconds of a ``slowStartWindow``
gets ``max(minWeightPercent / 100, (t / window) ^ (1 / aggression))`` of its share.

Time-aware picks rather than rebuilds on a timer: while some node is warming, the picker is
wrapped in :class:`SlowStartPicker`, which asks the policy's picker and keeps its answer with
probability ``factor(node) / factor(oldest)`` (rejection sampling), else asks again. A node's
share is then its weight times its factor, normalized, at every instant of the window, with no
rebuild per call or per tick: for random that is exact; for (weighted) round robin a refused
turn passes to the next node, which gives the same shares over a cycle; for least_request
the factor thins the node's draws among the random choices. A build with no node warming
returns the policy's picker as it is (no cost), and once the window has passed the wrapper
costs a clock read until the next build.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..config import SlowStartConfig
from ..routing import CallInfo
from .base import DoneInfo, Endpoint, Pick, Picker

__all__ = ["MAX_TRIES", "REFUSED", "SlowStartPicker", "slow_start"]

T = TypeVar("T")

#: Draws per pick at most: past this, the last draw is taken (only when nearly every node is
#: at a factor close to 0, minWeightPercent 0 at the start of the window).
MAX_TRIES = 32
#: What a refused pick's done callback learns: it never started (a load-aware policy counted
#: it in flight).
REFUSED = DoneInfo("CANCELLED", 0.0)
_rand = _random.random


class SlowStartPicker(Generic[T]):
    """``picker``'s picks, thinned for the nodes still warming (see the module)."""

    __slots__ = (
        "_clock",
        "_exponent",
        "_floor",
        "_oldest",
        "_picker",
        "_since",
        "_until",
        "_window",
    )

    def __init__(
        self,
        picker: Picker[T],
        since: dict[int, float],
        config: SlowStartConfig,
        clock: Callable[[], float],
        oldest: float | None = None,
    ) -> None:
        self._picker = picker
        #: id(sub-channel) -> when it became READY, for the nodes warming at the build.
        self._since = since
        self._clock = clock
        # SlowStartConfig.factor's terms, as plain floats: the pick computes it inline.
        self._window = config.slow_start_window
        self._exponent = 1 / config.aggression
        self._floor = config.min_weight_percent / 100
        self._until = max(since.values()) + self._window
        #: When the longest-READY node became READY, if every node is warming (its factor is
        #: the largest: the others are accepted in proportion to it); None: some node is warm.
        self._oldest = oldest

    def pick(self, call: CallInfo) -> Pick[T]:
        """The wrapped picker's answer, asked again while a warming node is refused."""
        now = self._clock()
        picker = self._picker
        if now >= self._until:
            return picker.pick(call)
        since = self._since
        top = None
        for _ in range(MAX_TRIES):
            pick = picker.pick(call)
            began = since.get(id(pick.subchannel))
            if began is None:
                return pick
            factor = self._factor(now - began)
            if top is None:
                top = 1.0 if self._oldest is None else self._factor(now - self._oldest)
            if factor >= top or _rand() * top < factor:
                return pick
            if pick.done is not None:
                pick.done(REFUSED)
        return picker.pick(call)

    def _factor(self, age: float) -> float:
        """SlowStartConfig.factor, for an age within the window."""
        ramp: float = (age / self._window) ** self._exponent if age > 0 else 0.0
        return ramp if ramp > self._floor else self._floor


def slow_start(
    picker: Picker[T],
    ready: Sequence[Endpoint[T]],
    config: SlowStartConfig | None,
    clock: Callable[[], float] = time.monotonic,
) -> Picker[T]:
    """``picker`` as it is when ``config`` is None or no node of ``ready`` is warming, else
    wrapped in a :class:`SlowStartPicker`."""
    if config is None:
        return picker
    now = clock()
    window = config.slow_start_window
    since: dict[int, float] = {}
    some_warm = False
    for endpoint in ready:
        began = endpoint.ready_since
        if began is None or now - began >= window:
            some_warm = True  # None: the channel does not say; taken as warm
        else:
            since[id(endpoint.subchannel)] = began
    if not since:
        return picker
    oldest = None if some_warm else min(since.values())
    return SlowStartPicker(picker, since, config, clock, oldest)
