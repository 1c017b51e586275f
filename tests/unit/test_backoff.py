"""backoff.Backoff: growth, cap, jitter bound, reset (seeded, so every run is the same)."""

from __future__ import annotations

import random

import pytest

from grpc_etcd.backoff import JITTER, MULTIPLIER, Backoff


def test_delays_grow_by_the_multiplier_within_the_jitter_and_stop_at_the_cap() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    nominal = 0.1
    for _ in range(20):
        delay = backoff.next_delay()
        assert nominal * (1 - JITTER) <= delay <= min(nominal * (1 + JITTER), 1.0)
        nominal = min(nominal * MULTIPLIER, 1.0)
    assert backoff.attempts == 20


def test_jitter_spreads_the_delays() -> None:
    delays = {Backoff(0.1, 1.0, rng=random.Random(seed)).next_delay() for seed in range(50)}
    assert len(delays) == 50  # no two clients retry in lockstep


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.1 * (1 + JITTER)


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_bad_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base, cap)
