"""``p2c_ewma``: of two random nodes, the one with the lower EWMA(latency) x (in-flight + 1).

go-zero's ``zrpc/internal/balancer/p2c`` (itself after finagle and Kratos): the latency
average decays with time, not with the number of calls; a node whose recent calls failed is
penalised (picked only against another failing node); a node not picked for ``FORCE_PICK``
is picked once, so a node that was slow gets the chance to show it recovered.

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

_PICK_TRIES = range(PICK_TIMES)
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

    __slots__ = ("clock", "cost", "lag", "last", "penalty", "picked", "success")

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

    def _finish(self, info: DoneInfo) -> None:
        try:  # noqa: SIM105  (see Load._finish)
            self.calls.pop()
        except IndexError:
            pass
        now = self.clock()
        elapsed = max(now - self.last, 0.0)
        self.last = now
        # The first sample is taken as it is (go-zero); later ones weigh by the time since.
        keep = math.exp(-elapsed / DECAY_TIME) if self.lag else 0.0
        self.lag = lag = self.lag * keep + info.latency * (1 - keep)
        outcome = 0.0 if info.code in FAILURE_CODES else INIT_SUCCESS
        self.success = success = self.success * keep + outcome * (1 - keep)
        self.cost = math.sqrt(lag * 1e9 + 1)
        self.penalty = 0.0 if success > THROTTLE_SUCCESS else PENALTY


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
            for _ in _PICK_TRIES:
                a = int(_rand() * n)
                b = int(_rand() * (n - 1))
                b += b >= a
                first, second = stats[a], stats[b]
                if not (first.penalty or second.penalty):
                    break  # two healthy nodes (go-zero draws up to PICK_TIMES pairs for it)
            # go-zero's load: cost x (calls in flight + 1), plus the penalty of an unhealthy node.
            load_a = first.cost * (len(first.calls) + 1) + first.penalty
            load_b = second.cost * (len(second.calls) + 1) + second.penalty
            if load_a > load_b:
                a, b, second = b, a, first
            chosen = b if now - second.picked > FORCE_PICK else a
        node = stats[chosen]
        node.picked = now
        node.calls.append(None)
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
