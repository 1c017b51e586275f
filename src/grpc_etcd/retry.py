"""Retry decisions (pure): whether a failed attempt is tried again, when, and where not.

gRPC's semantics (gRFC A6): a ``retryPolicy`` applies only to the methods its methodConfig
entry names; at most ``maxAttempts`` attempts (capped at 5); the n-th retry waits a random
time in ``[0, min(initialBackoff x multiplier^(n-1), maxBackoff)]``; only codes in
``retryableStatusCodes`` are retried; a server's ``grpc-retry-pushback-ms`` trailer overrides
the delay (a negative or malformed one forbids retrying). ``retryThrottling`` is a token bucket
shared by a channel's calls: a retryable failure takes a token, a success gives back
``tokenRatio``, and retries go on only while more than half the tokens are left, so that
retries cannot multiply the load in an outage.

Beyond a policy, a call that never reached a server (the connection was refused or reset
before any response) is retried once at once on another node: gRPC's transparent retry.

:class:`CallRetry` is one call's state; the call's flow (``_channel/_flow.py``) asks it after
each failed attempt and re-picks, avoiding the addresses the call already tried
(:func:`pick_avoiding`). Hedging (``hedgingPolicy``) is decided by the flow itself, with the same
throttle and :func:`pushback_delay`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from typing import TypeVar

from .config import MAX_ATTEMPTS, RetryPolicy, RetryThrottling

__all__ = [
    "MAX_ATTEMPTS",
    "PUSHBACK_KEY",
    "CallRetry",
    "RetryThrottle",
    "never_reached_server",
    "pick_avoiding",
    "pushback_delay",
]

T = TypeVar("T")

PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRFC A6's server pushback trailer
#: Re-picks to find an address the call has not tried, before settling for a tried one.
AVOID_TRIES = 8

# What grpc core says when a call failed before any server saw it (connect failures, a
# connection reset before the response headers). Matched case-insensitively in the details.
_NOT_REACHED = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "connections to all backends failing",
    "socket closed",
    "connection reset",
    "broken pipe",
    "goaway",
)


def never_reached_server(code: str, details: str, *, got_response: bool) -> bool:
    """Whether a failed attempt never reached a server: UNAVAILABLE with a transport
    message and no response (no headers) received."""
    if code != "UNAVAILABLE" or got_response:
        return False
    lowered = details.lower()
    return any(phrase in lowered for phrase in _NOT_REACHED)


class RetryThrottle:
    """gRPC's retry token bucket; one per channel, shared by its calls.

    Every update of the count happens under ``lock`` (a ``threading.Lock`` where calls run on
    several threads; none by default), so concurrent calls lose no token.
    """

    def __init__(
        self, throttling: RetryThrottling, *, lock: AbstractContextManager[object] | None = None
    ) -> None:
        # Milli-tokens: gRPC keeps tokenRatio to three decimals and counts in integers.
        self._max = throttling.max_tokens * 1000
        self._ratio = round(throttling.token_ratio * 1000)
        self._tokens = self._max
        self._lock = lock if lock is not None else contextlib.nullcontext()

    @property
    def tokens(self) -> float:
        """Tokens left (``maxTokens`` when nothing failed)."""
        return self._tokens / 1000

    def on_success(self) -> None:
        """An attempt succeeded: give back ``tokenRatio``."""
        if self._tokens < self._max:  # full (nothing failed lately): no lock on a call's path
            with self._lock:
                self._tokens = min(self._max, self._tokens + self._ratio)

    def on_failure(self) -> bool:
        """An attempt failed with a retryable code: take one token; whether retries are still
        allowed after it (one step, so that no other call's update comes in between)."""
        with self._lock:
            self._tokens = tokens = max(0, self._tokens - 1000)
        return tokens > self._max // 2

    @property
    def allows_retry(self) -> bool:
        """Retries (and hedges, gRFC A6) are allowed while more than half of ``maxTokens`` is
        left."""
        return self._tokens > self._max // 2


class CallRetry:
    """One call's retry state: attempts made, addresses tried, the next delay if any."""

    def __init__(
        self,
        policy: RetryPolicy | None,
        throttle: RetryThrottle | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self._throttle = throttle
        self._rng = rng or random.Random()
        self.attempts = 0
        """Attempts started that count against ``maxAttempts`` (transparent ones do not)."""
        self.transparent = 0
        """Transparent retries made (at most one)."""
        self.tried: set[str] = set()
        """Addresses this call already tried."""

    def started(self, address: str) -> None:
        """An attempt was sent to ``address``."""
        self.attempts += 1
        self.tried.add(address)

    def next_delay(
        self,
        code: str,
        *,
        reached_server: bool = True,
        pushback: str | None = None,
        time_left: float | None = None,
    ) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or None to give up.

        ``reached_server`` False (see :func:`never_reached_server`) allows one transparent
        retry at once; ``pushback`` is the ``grpc-retry-pushback-ms`` trailer if any;
        ``time_left`` the call's remaining deadline (a retry that cannot fit is not made).
        """
        if not reached_server and self.transparent == 0:
            self.transparent += 1
            self.attempts -= 1  # gRPC: a transparent retry is not a counted attempt
            return 0.0
        policy = self._policy
        if policy is None or code not in policy.retryable_status_codes:
            return None
        allowed = self._throttle.on_failure() if self._throttle is not None else True
        if self.attempts >= policy.attempts or not allowed:
            return None
        if pushback is not None:
            delay = pushback_delay(pushback)
            if delay is None:
                return None
        else:
            ceiling = policy.initial_backoff * policy.backoff_multiplier ** (self.attempts - 1)
            delay = self._rng.uniform(0, min(ceiling, policy.max_backoff))
        if time_left is not None and delay >= time_left:
            return None
        return delay


def pushback_delay(value: str) -> float | None:
    """Seconds a ``grpc-retry-pushback-ms`` value asks to wait; None when it forbids retrying
    (negative or not an integer, as gRFC A6 says)."""
    try:
        millis = int(value)
    except ValueError:
        return None
    return None if millis < 0 else millis / 1000


def pick_avoiding(
    pick: Callable[[], T | None],
    address_of: Callable[[T], str],
    tried: Container[str],
    give_back: Callable[[T], object] = lambda picked: None,
) -> T | None:
    """``pick()`` again (up to :data:`AVOID_TRIES` more times) until it gives an address not in
    ``tried``; else the first pick of a tried one (better a tried node than no call). Every
    pick not returned is handed to ``give_back`` (its done callback must hear of it). A pick
    of None (refused) ends the search: None if it was the first, else the tried one held."""
    held: T | None = None
    for _ in range(AVOID_TRIES + 1):
        picked = pick()
        if picked is None:
            break
        if address_of(picked) not in tried:
            if held is not None:
                give_back(held)
            return picked
        if held is None:
            held = picked
        else:
            give_back(picked)
    return held
