"""Exponential backoff with jitter (pure): how long to wait before the next retry.

Constants follow gRPC's connection-backoff spec (doc/connection-backoff.md): multiplier 1.6,
jitter 0.2; the base and cap are the caller's, since registering again after a lost lease
must be quick (the key is missing meanwhile) while a broken watch can wait longer.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]

MULTIPLIER = 1.6  # gRPC connection-backoff spec
JITTER = 0.2  # gRPC connection-backoff spec: +/- 20 %


class Backoff:
    """Delays ``base, base*1.6, ...`` up to ``cap``, each +/-20 % jitter; ``reset()`` on success."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, *, rng: random.Random | None = None):
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self._next = base
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the following one."""
        delay = self._next * (1 + self._rng.uniform(-JITTER, JITTER))
        self._next = min(self._next * MULTIPLIER, self.cap)
        self.attempts += 1
        return min(delay, self.cap)

    def reset(self) -> None:
        """Back to the base delay, after a success."""
        self._next = self.base
        self.attempts = 0
