"""One table of outcomes, run through both twins (issue 12).

Each row scripts what every node does with the attempts it receives (``scripted.py``), gives
the channel a service config, makes one call and says what must happen: the node each attempt
went to (the ``Ordered`` policy picks ``a``, ``b``, ``c`` in turn, so a retry's node is known),
the final status, what each attempt's done callback heard, the nodes whose attempt ended
cancelled, and the retry throttle's tokens afterwards. Every row runs for every call shape of
the sync and the asyncio BalancedChannel against real servers, and must give the same answer.

Semantics the rows pin down (gRFC A6 unless said otherwise):
- a retry goes to a node the call has not tried; ``maxAttempts`` counts the first attempt;
- response headers commit the call: a failure after them (for a stream: after its first
  response) is the call's outcome, though it still takes a throttle token;
- a throttle token is taken by each failure with a retryable (hedging: non-fatal) status and
  given back (``tokenRatio``) by every successful call, of any method; a transparent retry
  takes none and does not count as an attempt;
- ``grpc-retry-pushback-ms`` sets the next delay; a negative one forbids retrying;
- a retry that cannot start before the deadline is not made: the call ends at once with the
  last attempt's status (retry.py's rule; gRPC core would wait and report DEADLINE_EXCEEDED);
- an attempt that failed before any response (connection reset) is retried once on another
  node, whatever the config (transparent retry);
- hedging: another attempt every ``hedgingDelay`` on an untried node, at once after a
  non-fatal failure; the first answer commits and cancels the others (their servers see it);
  a fatal status or a pushback that forbids retrying ends the hedging.

Both twins drive the call flow (``_channel/_flow.py``): every row passes for every shape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from scripted import FAIL_METHOD, Lab, Ordered, Request, method, throttle_tokens

import grpc_etcd
import grpc_etcd.aio

BACKOFF = {"initialBackoff": "0.01s", "maxBackoff": "0.05s", "backoffMultiplier": 2}


def _retry(max_attempts: int = 3, max_tokens: int | None = 10) -> dict[str, Any]:
    policy = {"maxAttempts": max_attempts, **BACKOFF, "retryableStatusCodes": ["UNAVAILABLE"]}
    config: dict[str, Any] = {"methodConfig": [{"name": [{}], "retryPolicy": policy}]}
    if max_tokens is not None:
        config["retryThrottling"] = {"maxTokens": max_tokens, "tokenRatio": 0.1}
    return config


def _hedge(delay: str = "0.05s", attempts: int = 3) -> dict[str, Any]:
    policy = {
        "maxAttempts": attempts,
        "hedgingDelay": delay,
        "nonFatalStatusCodes": ["UNAVAILABLE"],
    }
    return {
        "methodConfig": [{"name": [{}], "hedgingPolicy": policy}],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }


RETRY = _retry()
HEDGE = _hedge()


@dataclass(frozen=True)
class Row:
    """One scripted call and what must come of it."""

    id: str
    scripts: dict[str, tuple[str, ...]]
    config: dict[str, Any] | None
    #: The node of each attempt, in order.
    picks: tuple[str, ...]
    code: str
    #: What each attempt's done callback heard, in the order of ``picks``.
    done: tuple[str, ...]
    #: Nodes whose attempt ended without an answer (client cancel, deadline, reset).
    cancelled: tuple[str, ...] = ()
    tokens: float | None = None
    timeout: float = 5.0
    #: Calls of ``/test.Script/Fail`` made first (to drain the throttle).
    drain: int = 0
    #: Responses a response-streaming call gets before it fails (after_headers rows).
    streamed: int = 0
    #: The row hedges: its attempts reach their servers in no fixed order.
    hedging: bool = False


ROWS = [
    Row("ok, no config", {}, None, ("a",), "OK", ("OK",)),
    Row("ok, retry policy", {}, RETRY, ("a",), "OK", ("OK",), tokens=10),
    Row(
        "fail before headers, no config",
        {"a": ("unavailable",)}, None, ("a",), "UNAVAILABLE", ("UNAVAILABLE",),
    ),
    Row(
        "fail before headers, then ok",
        {"a": ("unavailable",)}, RETRY, ("a", "b"), "OK", ("UNAVAILABLE", "OK"), tokens=9.1,
    ),
    Row(
        "fail before headers, then ok, no throttling",
        {"a": ("unavailable",)}, _retry(max_tokens=None), ("a", "b"), "OK",
        ("UNAVAILABLE", "OK"),
    ),
    Row(
        "every attempt fails: maxAttempts",
        {n: ("unavailable",) for n in "abc"}, RETRY, ("a", "b", "c"), "UNAVAILABLE",
        ("UNAVAILABLE",) * 3, tokens=7,
    ),
    Row(
        "fatal status",
        {"a": ("not_found",)}, RETRY, ("a",), "NOT_FOUND", ("NOT_FOUND",), tokens=10,
    ),
    Row(
        "fail after headers (streams: after a response): committed",
        {"a": ("after_headers",)}, RETRY, ("a",), "UNAVAILABLE", ("UNAVAILABLE",), tokens=9,
        streamed=1,
    ),
    Row(
        "hang, no config",
        {"a": ("hang",)}, None, ("a",), "DEADLINE_EXCEEDED", ("DEADLINE_EXCEEDED",),
        cancelled=("a",), timeout=0.3,
    ),
    Row(
        "hang, retry policy",
        {"a": ("hang",)}, RETRY, ("a",), "DEADLINE_EXCEEDED", ("DEADLINE_EXCEEDED",),
        cancelled=("a",), tokens=10, timeout=0.3,
    ),
    Row(
        "pushback 10 ms, then ok",
        {"a": ("pushback:10",)}, RETRY, ("a", "b"), "OK", ("UNAVAILABLE", "OK"), tokens=9.1,
    ),
    Row(
        "pushback -1: no retry",
        {"a": ("pushback:-1",)}, RETRY, ("a",), "UNAVAILABLE", ("UNAVAILABLE",), tokens=9,
    ),
    Row(
        "deadline mid-backoff (pushback past the deadline)",
        {"a": ("pushback:5000",)}, RETRY, ("a",), "UNAVAILABLE", ("UNAVAILABLE",), tokens=9,
        timeout=1.0,
    ),
    Row(
        # maxTokens 4: the drain call fails on a (3 left, may retry) and b (2: may not).
        "throttle drained",
        {"a": ("unavailable",)}, _retry(max_tokens=4), ("a",), "UNAVAILABLE", ("UNAVAILABLE",),
        tokens=1, drain=1,
    ),
    Row(
        "connection reset (a node that drops or refuses it), no config: transparent retry",
        {"a": ("drop",)}, None, ("a", "b"), "OK", ("UNAVAILABLE", "OK"), cancelled=("a",),
    ),
    Row(
        "connection reset, retry policy: transparent, no token",
        {"a": ("drop",)}, RETRY, ("a", "b"), "OK", ("UNAVAILABLE", "OK"), cancelled=("a",),
        tokens=10,
    ),
    Row(
        "two resets, no config: one transparent retry only",
        {"a": ("drop",), "b": ("drop",)}, None, ("a", "b"), "UNAVAILABLE",
        ("UNAVAILABLE", "UNAVAILABLE"), cancelled=("a", "b"),
    ),
    Row(
        "two resets, retry policy: transparent, then the policy",
        {"a": ("drop",), "b": ("drop",)}, RETRY, ("a", "b", "c"), "OK",
        ("UNAVAILABLE", "UNAVAILABLE", "OK"), cancelled=("a", "b"), tokens=9.1,
    ),
    Row(
        # maxAttempts 2: with a third, it would go out whenever b's answer took longer than
        # hedgingDelay (50 ms: a busy machine's loopback round trip can), then be cancelled.
        "hedge: the second attempt answers, the first is cancelled",
        {"a": ("hang",)}, _hedge(attempts=2), ("a", "b"), "OK", ("CANCELLED", "OK"),
        cancelled=("a",), tokens=10, timeout=0.5, hedging=True,
    ),
    Row(
        "hedge: a non-fatal failure sends the next at once",
        {"a": ("unavailable",)}, _hedge("5s"), ("a", "b"), "OK", ("UNAVAILABLE", "OK"),
        tokens=9.1, hedging=True,
    ),
    Row(
        # Passes without hedging too: a fatal status ends the call before any hedge is due.
        "hedge: a fatal status ends the call",
        {"a": ("not_found",)}, _hedge("5s"), ("a",), "NOT_FOUND", ("NOT_FOUND",), tokens=10,
    ),
    Row(
        "hedge: pushback -1 stops the hedging",
        {"a": ("pushback:-1",)}, _hedge("5s"), ("a",), "UNAVAILABLE", ("UNAVAILABLE",),
        tokens=9, hedging=True,
    ),
    Row(
        "hedge: every attempt hangs until the deadline",
        {n: ("hang",) for n in "abc"}, HEDGE, ("a", "b", "c"), "DEADLINE_EXCEEDED",
        ("DEADLINE_EXCEEDED",) * 3, cancelled=("a", "b", "c"), tokens=10, timeout=0.3,
        hedging=True,
    ),
    Row(
        "hedge 0s: all at once, the answer commits",
        {"a": ("hang",), "b": ("hang",), "c": ("ok_after:a,b",)}, _hedge("0s"),
        ("a", "b", "c"), "OK", ("CANCELLED", "CANCELLED", "OK"), cancelled=("a", "b"),
        tokens=10, timeout=0.5, hedging=True,
    ),
]  # fmt: skip


# ---------------------------------------------------------------- what happened


@dataclass
class Outcome:
    code: str
    responses: int


@dataclass
class Seen:
    """What a row's call did, as the table compares it."""

    picks: tuple[str, ...]
    code: str
    done: tuple[str, ...]
    cancelled: tuple[str, ...]
    tokens: float | None
    servers: tuple[str, ...]  # the node of each attempt a server saw (a reset one too)
    responses: int


def expected(row: Row, shape: str) -> Seen:
    streams = shape in ("unary_stream", "unary_stream_read", "stream_stream")
    failed = row.streamed if streams else 0
    responses = (2 if streams else 1) if row.code == "OK" else failed
    return Seen(row.picks, row.code, row.done, row.cancelled, row.tokens, row.picks, responses)


def _code(exc: BaseException) -> str:
    code = exc.code() if isinstance(exc, grpc.RpcError) else None  # type: ignore[attr-defined]
    return code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__


REQUESTS = (Request(input="x"), Request(input="y"))


# ---------------------------------------------------------------- sync call shapes


def _sync_unary(channel: Any, timeout: float) -> Outcome:
    try:
        method(channel, "unary_unary")(Request(input="x"), timeout=timeout)
    except grpc.RpcError as exc:
        return Outcome(_code(exc), 0)
    return Outcome("OK", 1)


def _sync_with_call(channel: Any, timeout: float) -> Outcome:
    try:
        _, call = method(channel, "unary_unary").with_call(Request(input="x"), timeout=timeout)
    except grpc.RpcError as exc:
        return Outcome(_code(exc), 0)
    return Outcome(call.code().name, 1)


def _sync_future(channel: Any, timeout: float) -> Outcome:
    future = method(channel, "unary_unary").future(Request(input="x"), timeout=timeout)
    called: list[Any] = []
    once = threading.Event()

    def finished(done: Any) -> None:
        called.append(done)
        once.set()

    future.add_done_callback(finished)
    error = future.exception(timeout=10)
    assert once.wait(10) and called == [future], "the future's callback runs once, with it"
    if error is not None:
        assert future.code() == error.code()
        return Outcome(_code(error), 0)
    future.result()
    return Outcome(future.code().name, 1)


def _sync_unary_stream(channel: Any, timeout: float) -> Outcome:
    got = 0
    try:
        for _ in method(channel, "unary_stream")(Request(input="x"), timeout=timeout):
            got += 1
    except grpc.RpcError as exc:
        return Outcome(_code(exc), got)
    return Outcome("OK", got)


def _sync_stream_unary(channel: Any, timeout: float) -> Outcome:
    try:
        method(channel, "stream_unary")(iter(REQUESTS), timeout=timeout)
    except grpc.RpcError as exc:
        return Outcome(_code(exc), 0)
    return Outcome("OK", 1)


def _sync_stream_stream(channel: Any, timeout: float) -> Outcome:
    got = 0
    try:
        for _ in method(channel, "stream_stream")(iter(REQUESTS), timeout=timeout):
            got += 1
    except grpc.RpcError as exc:
        return Outcome(_code(exc), got)
    return Outcome("OK", got)


SYNC_SHAPES: dict[str, Callable[[Any, float], Outcome]] = {
    "unary": _sync_unary,
    "with_call": _sync_with_call,
    "future": _sync_future,
    "unary_stream": _sync_unary_stream,
    "stream_unary": _sync_stream_unary,
    "stream_stream": _sync_stream_stream,
}


# ---------------------------------------------------------------- asyncio call shapes


async def _aio_unary(channel: Any, timeout: float) -> Outcome:
    try:
        await method(channel, "unary_unary")(Request(input="x"), timeout=timeout)
    except grpc.RpcError as exc:
        return Outcome(_code(exc), 0)
    return Outcome("OK", 1)


async def _aio_unary_call(channel: Any, timeout: float) -> Outcome:
    """The call object: awaited, then asked for its status (grpc.aio's ``with_call``)."""
    call = method(channel, "unary_unary")(Request(input="x"), timeout=timeout)
    try:
        await call
        got = 1
    except grpc.RpcError as exc:
        got = 0
        assert await call.code() == exc.code()  # type: ignore[attr-defined]
    assert call.done()
    return Outcome((await call.code()).name, got)


async def _aio_unary_stream(channel: Any, timeout: float) -> Outcome:
    got = 0
    try:
        async for _ in method(channel, "unary_stream")(Request(input="x"), timeout=timeout):
            got += 1
    except grpc.RpcError as exc:
        return Outcome(_code(exc), got)
    return Outcome("OK", got)


async def _aio_unary_stream_read(channel: Any, timeout: float) -> Outcome:
    call = method(channel, "unary_stream")(Request(input="x"), timeout=timeout)
    got = 0
    try:
        while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
            got += 1
    except grpc.RpcError as exc:
        return Outcome(_code(exc), got)
    return Outcome((await call.code()).name, got)


async def _aio_stream_unary(channel: Any, timeout: float) -> Outcome:
    try:
        await method(channel, "stream_unary")(iter(REQUESTS), timeout=timeout)
    except grpc.RpcError as exc:
        return Outcome(_code(exc), 0)
    return Outcome("OK", 1)


async def _aio_stream_stream(channel: Any, timeout: float) -> Outcome:
    got = 0
    try:
        async for _ in method(channel, "stream_stream")(iter(REQUESTS), timeout=timeout):
            got += 1
    except grpc.RpcError as exc:
        return Outcome(_code(exc), got)
    return Outcome("OK", got)


AIO_SHAPES = {
    "unary": _aio_unary,
    "unary_call": _aio_unary_call,
    "unary_stream": _aio_unary_stream,
    "unary_stream_read": _aio_unary_stream_read,
    "stream_unary": _aio_stream_unary,
    "stream_stream": _aio_stream_stream,
}


# ---------------------------------------------------------------- the table


def _cases(twin: str, shapes: dict[str, Any]) -> Iterator[Any]:
    for row in ROWS:
        for shape in shapes:
            yield pytest.param(row, shape, id=f"{row.id} | {shape}")


def _seen(lab: Lab, policy: Ordered, outcome: Outcome, channel: Any, done: list[str]) -> Seen:
    attempts = list(lab.journal.attempts)
    return Seen(
        tuple(policy.picks),
        outcome.code,
        tuple(done),
        tuple(a.node for a in attempts if a.cancelled),
        throttle_tokens(channel),
        tuple(a.node for a in attempts),
        outcome.responses,
    )


def _wait_cancelled(lab: Lab, row: Row) -> None:
    # A server hears of an attempt, and that it ended, a little after the client did (on a
    # busy machine a hedge's handler may only start once the call is over): wait until the
    # servers saw as many attempts as the row expects, and every one left without an answer
    # (hang, drop) has ended on its server.
    lab.journal.wait(
        lambda seen: (
            len(seen) >= len(row.picks)
            and all(a.cancelled for a in seen if a.step in ("hang", "drop"))
        ),
        10,
        "the servers to see every attempt, and their unanswered ones end",
    )


def _normalise(seen: Seen, row: Row) -> Seen:
    if row.hedging:  # concurrent attempts reach their servers in no fixed order
        seen.servers = tuple(sorted(seen.servers))
        seen.cancelled = tuple(sorted(seen.cancelled))
    return seen


@pytest.mark.parametrize(("row", "shape"), list(_cases("sync", SYNC_SHAPES)))
def test_sync(lab: Lab, row: Row, shape: str) -> None:
    lab.reset(row.scripts)
    policy = Ordered()
    with grpc_etcd.BalancedChannel("test.srv.script", policy=policy, config=row.config) as channel:
        channel.update(lab.snapshot())
        assert policy.built.wait(10), "the channel never connected to all three nodes"
        for _ in range(row.drain):
            _sync_unary_fail(channel)
        policy.wait_done()
        policy.reset()
        lab.reset(row.scripts)
        outcome = SYNC_SHAPES[shape](channel, row.timeout)
        done = policy.wait_done()
        _wait_cancelled(lab, row)
        seen = _seen(lab, policy, outcome, channel, done)
    assert _normalise(seen, row) == expected(row, shape)


def _sync_unary_fail(channel: Any) -> None:
    with pytest.raises(grpc.RpcError):
        method(channel, "unary_unary", FAIL_METHOD)(Request(input="drain"), timeout=5)


@pytest.mark.parametrize(("row", "shape"), list(_cases("aio", AIO_SHAPES)))
async def test_aio(lab: Lab, row: Row, shape: str) -> None:
    lab.reset(row.scripts)
    policy = Ordered()
    async with grpc_etcd.aio.BalancedChannel(
        "test.srv.script", policy=policy, config=row.config
    ) as channel:
        channel.update(lab.snapshot())
        assert await asyncio.to_thread(policy.built.wait, 10), "not connected to all three"
        for _ in range(row.drain):
            with pytest.raises(grpc.RpcError):
                await method(channel, "unary_unary", FAIL_METHOD)(Request(input="d"), timeout=5)
        await asyncio.to_thread(policy.wait_done)
        policy.reset()
        lab.reset(row.scripts)
        outcome = await AIO_SHAPES[shape](channel, row.timeout)
        done = await asyncio.to_thread(policy.wait_done)
        await asyncio.to_thread(_wait_cancelled, lab, row)
        seen = _seen(lab, policy, outcome, channel, done)
    assert _normalise(seen, row) == expected(row, shape)
