"""Outlier detection (pure): which nodes to stop picking, from the outcomes of their calls.

gRFC A50's algorithm, plus Envoy's consecutive errors for a fast ejection:

- every call's outcome is counted per address in the *active* bucket; every ``interval`` the
  buckets swap and the two A50 algorithms look at the finished one: *success rate* (eject an
  address whose rate is more than ``stdevFactor/1000`` standard deviations below the mean) and
  *failure percentage* (eject above ``threshold`` percent failed);
- ``consecutiveErrors`` failed calls in a row eject an address at once, without waiting for
  the interval (Envoy's ``consecutive_5xx``);
- an ejected address returns after ``baseEjectionTime x multiplier`` (capped by
  ``maxEjectionTime``); each ejection raises its multiplier by one, each interval spent not
  ejected lowers it by one, so a repeat offender stays out longer and a reformed one is forgiven;
- ``maxEjectionPercent`` is never exceeded: an ejection that would take the ejected share above
  it does not happen (A50 lets one ejection overshoot it; we do not, so that a small cluster
  can never be emptied by its own errors - with 3 nodes, it takes 34 % to eject one).

Deviation from A50, on purpose: only the status codes that speak of the *server*
(:data:`FAILURE_CODES`) count as failures; an application error such as NOT_FOUND counts as a
success (the server answered) and CANCELLED is not counted at all (the caller gave up).

The detector never reads a clock or starts a timer: the caller passes ``now`` and calls
:meth:`OutlierDetector.sweep` at :attr:`OutlierDetector.next_sweep`. Not thread-safe.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from .config import OutlierDetection

__all__ = ["FAILURE_CODES", "OutlierDetector"]

#: Codes that say the server, not the request, is at fault (Envoy's "gateway failure" idea).
FAILURE_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS", "RESOURCE_EXHAUSTED"}
)
#: Not counted at all: the caller gave up, the server said nothing about itself.
IGNORED_CODES = frozenset({"CANCELLED"})


@dataclass(slots=True)
class _Address:
    successes: int = 0  # active bucket
    failures: int = 0
    last_successes: int = 0  # inactive bucket: the interval that just ended
    last_failures: int = 0
    consecutive_failures: int = 0
    ejected_at: float | None = None
    multiplier: int = 0

    @property
    def last_volume(self) -> int:
        return self.last_successes + self.last_failures


class OutlierDetector:
    """Ejection state of the addresses of one channel, driven by call outcomes and ``now``."""

    def __init__(
        self, config: OutlierDetection, *, now: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._addresses: dict[str, _Address] = {}
        self.next_sweep = now + config.interval
        """When :meth:`sweep` should run next (the caller's clock)."""

    @property
    def config(self) -> OutlierDetection:
        """The settings in force."""
        return self._config

    def configure(self, config: OutlierDetection, *, now: float) -> None:
        """New settings: counters restart, current ejections keep their start time."""
        self._config = config
        for state in self._addresses.values():
            state.successes = state.failures = state.consecutive_failures = 0
        self.next_sweep = now + config.interval

    @property
    def ejected(self) -> frozenset[str]:
        """The addresses ejected now."""
        return frozenset(a for a, s in self._addresses.items() if s.ejected_at is not None)

    def is_ejected(self, address: str) -> bool:
        """Whether ``address`` is ejected now."""
        state = self._addresses.get(address)
        return state is not None and state.ejected_at is not None

    def track(self, addresses: Iterable[str]) -> None:
        """The channel's address set now: new ones start clean, gone ones are forgotten."""
        wanted = set(addresses)
        for gone in self._addresses.keys() - wanted:
            del self._addresses[gone]
        for address in wanted:
            self._addresses.setdefault(address, _Address())

    def record(self, address: str, code: str, now: float) -> bool:
        """Count one call's outcome; True when it ejected ``address`` (consecutive errors)."""
        state = self._addresses.get(address)
        if state is None or code in IGNORED_CODES:
            return False
        if code not in FAILURE_CODES:
            state.successes += 1
            state.consecutive_failures = 0
            return False
        state.failures += 1
        state.consecutive_failures += 1
        limit = self._config.consecutive_errors
        if limit is None or state.ejected_at is not None or state.consecutive_failures < limit:
            return False
        state.consecutive_failures = 0
        return self._eject(state, now)

    def sweep(self, now: float) -> set[str]:
        """The interval's work (A50's timer): returns the addresses ejected or returned."""
        before = self.ejected
        self.next_sweep = now + self._config.interval
        for state in self._addresses.values():
            state.last_successes, state.last_failures = state.successes, state.failures
            state.successes = state.failures = 0
        if self._config.success_rate_ejection is not None:
            self._success_rate(now)
        if self._config.failure_percentage_ejection is not None:
            self._failure_percentage(now)
        for state in self._addresses.values():
            if state.ejected_at is None:
                state.multiplier = max(0, state.multiplier - 1)
            elif now >= state.ejected_at + self._ejection_time(state):
                state.ejected_at = None
        return set(before ^ self.ejected)

    # ---------------------------------------------------------------- internals

    def _ejection_time(self, state: _Address) -> float:
        base = self._config.base_ejection_time
        return min(base * state.multiplier, max(base, self._config.max_ejection_time))

    def _may_eject(self) -> bool:
        ejected = sum(1 for s in self._addresses.values() if s.ejected_at is not None)
        return (ejected + 1) * 100 <= self._config.max_ejection_percent * len(self._addresses)

    def _eject(self, state: _Address, now: float) -> bool:
        if not self._may_eject():
            return False
        state.ejected_at = now
        state.multiplier += 1
        return True

    def _enforced(self, percentage: int) -> bool:
        return percentage >= 100 or self._rng.random() * 100 < percentage

    def _success_rate(self, now: float) -> None:
        settings = self._config.success_rate_ejection
        assert settings is not None
        volume = [s for s in self._addresses.values() if s.last_volume >= settings.request_volume]
        if not volume or len(volume) < settings.minimum_hosts:
            return
        rates = [s.last_successes / s.last_volume for s in volume]
        mean = sum(rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
        floor = mean - stdev * (settings.stdev_factor / 1000)
        for state, rate in zip(volume, rates, strict=True):
            if state.ejected_at is None and rate < floor:
                if not self._may_eject():
                    return
                if self._enforced(settings.enforcement_percentage):
                    self._eject(state, now)

    def _failure_percentage(self, now: float) -> None:
        settings = self._config.failure_percentage_ejection
        assert settings is not None
        volume = [s for s in self._addresses.values() if s.last_volume >= settings.request_volume]
        if not volume or len(volume) < settings.minimum_hosts:
            return
        for state in volume:
            failed = 100 * state.last_failures / state.last_volume
            if state.ejected_at is None and failed > settings.threshold:
                if not self._may_eject():
                    return
                if self._enforced(settings.enforcement_percentage):
                    self._eject(state, now)
