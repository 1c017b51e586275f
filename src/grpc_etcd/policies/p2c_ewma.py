"""``p2c_ewma``: of two random nodes, the one with the lower EWMA(latency) x (in-flight + 1).

go-zero's ``zrpc/internal/balancer/p2c`` (itself after finagle and Kratos): the latency
average decays with time, not with the number of calls; a node whose recent calls failed is
penalised (picked only against another failing node); a node not picked for ``FORCE_PICK``
is picked once, so a node that was slow gets the chance to show it recovered.

Calls in flight count as latency already paid. A node that accepts calls and never answers
reports nothing until its calls' deadlines, and go-zero's load would take it for the fastest
node there is (no latency measured: a cost of 1 against ~1,000 for a node answering in 1 ms).
So, as Finagle's ``PeakEwma`` does, a node with calls in flight and no latency measured yet
costs :data:`PENDING_PENALTY` plus its calls in flight; and a node with calls in flight is
taken to be at least as slow as the time since it last made progress (answered a call, or
got its first call after being idle) - a lower bound of its oldest call's latency. A hung
node so loses every comparison within a few milliseconds of its first call, and is not forced
while its calls are out (they will tell how it does).

Unlike go-zero, the statistics belong to the policy instance (one per channel), not to the
picker: a rebuild after any connectivity change keeps them.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..config import NoSettings, PolicySettings
from ..routing import CallInfo
from ._load import Load, LoadTable
from .base import DoneInfo, Endpoint, Pick

__all__ = [
    "DECAY_TIME",
    "FORCE_PICK",
    "INIT_SUCCESS",
    "PENALTY",
    "PENDING_PENALTY",
    "PICK_TIMES",
    "THROTTLE_SUCCESS",
    "P2CEwmaPicker",
    "P2CEwmaPolicy",
]

T = TypeVar("T")

#: Seconds over which the latency and success averages decay (go-zero: "default value from
#: finagle", 10 s).
DECAY_TIME = 10.0
#: A node not picked for this long (seconds) is picked once (go-zero ``forcePick``, 1 s).
FORCE_PICK = 1.0
#: The success average of a fresh node, and its value after each success (go-zero).
INIT_SUCCESS = 1000.0
#: Below this success average a node is unhealthy and penalised (go-zero: initSuccess / 2).
THROTTLE_SUCCESS = INIT_SUCCESS / 2
#: Added to an unhealthy node's load, so a healthy one always wins (go-zero: MaxInt32).
PENALTY = float(2**31 - 1)
#: Draws of a pair looking for two healthy nodes before taking what came (go-zero: 3).
PICK_TIMES = 3
#: The load of a node with calls in flight and no latency measured yet, plus one per call in
#: flight: Finagle's ``PeakEwma`` penalty (``Long.MaxValue >> 16``), far above any measured
#: load, so such a node gets one call at a time until its first answer.
PENDING_PENALTY = float((2**63 - 1) >> 16)

_PICK_TRIES = range(PICK_TIMES - 1)
_rand = _random.random

#: Outcomes that count against a node (go-zero's ``codes.Acceptable`` complement).
FAILURE_CODES = frozenset(
    {
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNIMPLEMENTED",
        "RESOURCE_EXHAUSTED",
    }
)


class _Stats(Load):
    """One address's calls in flight, latency EWMA (seconds) and success EWMA."""

    __slots__ = ("clock", "cost", "lag", "last", "penalty", "picked", "since", "success")

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.lag = 0.0
        self.success = INIT_SUCCESS
        # Kept from the averages when a call ends, so a pick only multiplies and adds:
        # go-zero's load is sqrt(lag in ns + 1) x (inflight + 1); the root damps a spike.
        self.cost = 1.0
        self.penalty = 0.0
        self.last = clock()
        self.picked = self.last
        #: When the node last made progress: its last answer, or its first call after idling.
        self.since = self.last

    def _finish(self, info: DoneInfo) -> None:
        try:  # noqa: SIM105  (see Load._finish)
            self.calls.pop()
        except IndexError:
            pass
        self.since = now = self.clock()
        elapsed = max(now - self.last, 0.0)
        self.last = now
        # The first sample is taken as it is (go-zero); later ones weigh by the time since.
        keep = math.exp(-elapsed / DECAY_TIME) if self.lag else 0.0
        self.lag = lag = self.lag * keep + info.latency * (1 - keep)
        outcome = 0.0 if info.code in FAILURE_CODES else INIT_SUCCESS
        self.success = success = self.success * keep + outcome * (1 - keep)
        self.cost = math.sqrt(lag * 1e9 + 1)
        self.penalty = 0.0 if success > THROTTLE_SUCCESS else PENALTY

    def load(self, now: float) -> float:
        """What a pick compares: go-zero's cost x (calls in flight + 1) + the failure penalty,
        with the calls in flight counted as latency already paid (see the module's text)."""
        pending = len(self.calls)
        if not pending:
            return self.cost + self.penalty
        if not self.lag:
            return PENDING_PENALTY + pending + self.penalty
        paid = now - self.since
        cost = math.sqrt(paid * 1e9 + 1) if paid > self.lag else self.cost
        return cost * (pending + 1) + self.penalty


class P2CEwmaPicker(Generic[T]):
    """Power of two choices over the policy's shared statistics."""

    __slots__ = ("_clock", "_n", "_picks", "_stats")

    def __init__(
        self, ready: Sequence[Endpoint[T]], stats: LoadTable, clock: Callable[[], float]
    ) -> None:
        self._stats = tuple(stats.get(e.node.address) for e in ready)
        self._picks = tuple(
            Pick(e.subchannel, s.finish) for e, s in zip(ready, self._stats, strict=True)
        )
        self._n = len(self._picks)
        self._clock = clock

    def pick(self, call: CallInfo) -> Pick[T]:
        """The less loaded of two random endpoints (or the one left idle too long)."""
        n = self._n
        stats: tuple[_Stats, ...] = self._stats  # type: ignore[assignment]
        now = self._clock()
        if n == 1:
            chosen = 0
        else:
            a = int(_rand() * n)
            b = int(_rand() * (n - 1))
            b += b >= a
            first, second = stats[a], stats[b]
            if first.penalty or second.penalty:
                for _ in _PICK_TRIES:  # go-zero draws up to PICK_TIMES pairs for two healthy
                    a = int(_rand() * n)
                    b = int(_rand() * (n - 1))
                    b += b >= a
                    first, second = stats[a], stats[b]
                    if not (first.penalty or second.penalty):
                        break
            # The common case inline (no call in flight on either): go-zero's cost + penalty.
            load_a = first.load(now) if first.calls else first.cost + first.penalty
            load_b = second.load(now) if second.calls else second.cost + second.penalty
            if load_a > load_b:
                a, b, second = b, a, first
            # Force the loser if it was left alone too long, unless calls to it are still out.
            chosen = b if now - second.picked > FORCE_PICK and not second.calls else a
        node = stats[chosen]
        node.picked = now
        calls = node.calls
        if not calls:
            node.since = now
        calls.append(None)
        return self._picks[chosen]


class P2CEwmaPolicy:
    """Builds :class:`P2CEwmaPicker`s; ``clock`` (seconds) is replaceable for tests."""

    name = "p2c_ewma"

    def __init__(
        self,
        settings: Mapping[str, Any] | PolicySettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = NoSettings.of(self.name, settings)
        self._clock = clock
        self._stats = LoadTable(lambda: _Stats(clock))

    def build(self, ready: Sequence[Endpoint[T]]) -> P2CEwmaPicker[T]:
        """A picker over ``ready`` sharing this policy's per-address statistics."""
        self._stats.keep(e.node.address for e in ready)
        return P2CEwmaPicker(ready, self._stats, self._clock)
