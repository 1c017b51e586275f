"""Retry decisions (gRFC A6) and the retry token bucket, without any server."""

from __future__ import annotations

import itertools
import random

import pytest

from grpc_etcd.config import RetryPolicy, RetryThrottling
from grpc_etcd.retry import (
    CallRetry,
    RetryThrottle,
    never_reached_server,
    pick_avoiding,
)


def policy(max_attempts: int = 4, **extra: object) -> RetryPolicy:
    return RetryPolicy.model_validate(
        {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
            **extra,
        }
    )


def test_attempts_stop_at_max_attempts_capped_at_five() -> None:
    for max_attempts, expected in ((3, 3), (9, 5)):
        retry = CallRetry(policy(max_attempts), rng=random.Random(1))
        attempts = 0
        while True:
            retry.started(f"127.0.0.1:{attempts}")
            attempts += 1
            if retry.next_delay("UNAVAILABLE") is None:
                break
        assert attempts == expected


def test_only_retryable_codes_are_retried() -> None:
    retry = CallRetry(policy())
    retry.started("a")
    assert retry.next_delay("NOT_FOUND") is None
    assert CallRetry(None).next_delay("UNAVAILABLE") is None


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """Seeded, 500 calls: each n-th delay lies in [0, min(0.1 x 2^(n-1), 1)] and its mean
    is within 20 % of half the ceiling (uniform jitter)."""
    rng = random.Random(5)
    ceilings = [0.1, 0.2, 0.4, 0.8]
    delays: list[list[float]] = [[] for _ in ceilings]
    for _ in range(500):
        retry = CallRetry(policy(max_attempts=5), rng=rng)
        for n in range(4):
            retry.started(str(n))
            delay = retry.next_delay("UNAVAILABLE")
            assert delay is not None
            delays[n].append(delay)
    for ceiling, seen in zip(ceilings, delays, strict=True):
        assert min(seen) >= 0 and max(seen) <= ceiling
        assert abs(sum(seen) / len(seen) - ceiling / 2) < 0.2 * ceiling / 2
    retry = CallRetry(policy(max_attempts=5, maxBackoff="0.15s"), rng=rng)
    for n in range(4):
        retry.started(str(n))
        assert (retry.next_delay("UNAVAILABLE") or 0) <= 0.15


def test_pushback_overrides_or_forbids_and_the_deadline_bounds() -> None:
    retry = CallRetry(policy())
    retry.started("a")
    assert retry.next_delay("UNAVAILABLE", pushback="250") == 0.25
    assert retry.next_delay("UNAVAILABLE", pushback="-1") is None
    retry = CallRetry(policy())
    retry.started("a")
    assert retry.next_delay("UNAVAILABLE", pushback="junk") is None
    retry = CallRetry(policy())
    retry.started("a")
    assert retry.next_delay("UNAVAILABLE", pushback="500", time_left=0.4) is None


def test_transparent_retry_once_whatever_the_policy_and_not_counted() -> None:
    retry = CallRetry(None)
    retry.started("a")
    assert retry.next_delay("UNAVAILABLE", reached_server=False) == 0.0
    retry.started("b")
    assert retry.next_delay("UNAVAILABLE", reached_server=False) is None
    counted = CallRetry(policy(max_attempts=2))
    counted.started("a")
    assert counted.next_delay("UNAVAILABLE", reached_server=False) == 0.0
    counted.started("b")
    assert counted.next_delay("UNAVAILABLE") is not None  # still one policy retry left
    assert counted.tried == {"a", "b"}


def test_throttle_allows_retries_while_more_than_half_the_tokens_are_left() -> None:
    throttle = RetryThrottle(RetryThrottling.model_validate({"maxTokens": 10, "tokenRatio": 0.5}))
    for _ in range(4):
        throttle.on_failure()
    assert throttle.tokens == 6 and throttle.allows_retry
    throttle.on_failure()
    assert throttle.tokens == 5 and not throttle.allows_retry  # 5 is not more than 10/2
    throttle.on_success()
    assert throttle.tokens == 5.5 and throttle.allows_retry
    for _ in range(20):
        throttle.on_success()
    assert throttle.tokens == 10
    for _ in range(20):
        throttle.on_failure()
    assert throttle.tokens == 0


def test_a_throttled_channel_stops_retrying_in_an_outage() -> None:
    throttle = RetryThrottle(RetryThrottling.model_validate({"maxTokens": 10, "tokenRatio": 0.1}))
    retried = 0
    for call in range(100):
        retry = CallRetry(policy(max_attempts=5), throttle, rng=random.Random(call))
        retry.started("a")
        while retry.next_delay("UNAVAILABLE") is not None:
            retried += 1
            retry.started("b")
    assert retried == 4  # 10 tokens, retries stop at 5: then every call fails once


@pytest.mark.parametrize(
    ("code", "details", "got_response", "expected"),
    [
        (
            "UNAVAILABLE",
            "failed to connect to all addresses; Connection refused",
            False,
            True,
        ),
        ("UNAVAILABLE", "Socket closed", False, True),
        ("UNAVAILABLE", "Socket closed", True, False),
        ("UNAVAILABLE", "server says no", False, False),
        ("INTERNAL", "connection reset", False, False),
    ],
)
def test_never_reached_server(code: str, details: str, got_response: bool, expected: bool) -> None:
    assert never_reached_server(code, details, got_response=got_response) is expected


def test_pick_avoiding_skips_tried_addresses_but_settles_when_all_are_tried() -> None:
    picks = itertools.cycle(["a", "b", "c"])
    assert pick_avoiding(lambda: next(picks), str, {"a", "b"}) == "c"
    assert pick_avoiding(lambda: "a", str, {"a"}) == "a"
