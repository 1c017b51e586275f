"""The grpcio internals the channels use (docs/architecture.md, "grpcio internals") fail soft:
each test takes one away, as a grpcio that moved it (or an interceptor around the sub-channels)
would, and the channel still does its job through grpcio's public API."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import grpc.aio
import pytest
from scripted import RETRY, SERVICE, Lab, Ordered, Request, method, throttle_tokens
from waiting import wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd._channel import _aio, _sync, _tracing

HEDGE = {
    "methodConfig": [
        {
            "name": [{}],
            "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.05s"},
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.5},
}
THROTTLED_RETRY = {**RETRY, "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.5}}


class _Passing(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor that changes nothing (OpenTelemetry's instrumentor puts one around every
    grpc.insecure_channel)."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


# ---------------------------------------------------------------- sync


def test_sync_without_a_cygrpc_channel_to_poll_follows_grpcs_subscribe(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sync, "_core", lambda channel: None)
    lab.reset()
    policy = Ordered()
    with grpc_etcd.BalancedChannel(SERVICE, policy=policy) as channel:
        channel.update(lab.snapshot())
        assert policy.built.wait(10), "never saw the three nodes READY"
        assert all(sub.core is None for sub in channel._subs.values())
        assert method(channel, "unary_unary")(Request(input="x"), timeout=5).output
        a = lab.servers["a"]
        a.proxy.cut()  # its connection drops; the proxy refuses new ones
        wait_for(
            lambda: channel.subchannel_states()[a.address] != grpc.ChannelConnectivity.READY,
            10,
            "the channel to see a go",
        )
        lab.reset()  # a's proxy takes connections again
        wait_for(
            lambda: channel.subchannel_states()[a.address] == grpc.ChannelConnectivity.READY,
            10,
            "a back",
        )


def test_sync_hedges_as_futures_without_a_blocking_call_to_cancel(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An intercepted sub-channel's multicallable has no cygrpc channel whose segregated call
    # the cheap hedge captures: every attempt of a hedged call runs as a grpc future.
    plain = grpc.insecure_channel

    def intercepted(target: str, options: Any = None, compression: Any = None) -> Any:
        return grpc.intercept_channel(plain(target, options, compression), _Passing())

    monkeypatch.setattr(grpc, "insecure_channel", intercepted)
    lab.reset({"a": ("hang",)})
    policy = Ordered()
    with grpc_etcd.BalancedChannel(SERVICE, policy=policy, config=HEDGE) as channel:
        channel.update(lab.snapshot())
        assert policy.built.wait(10)
        policy.reset()
        answer = method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert answer.output.startswith("b|")
        assert policy.wait_done() == ["CANCELLED", "OK"]
        captures = [
            found
            for sub in channel._subs.values()
            for key, found in sub.callables.items()
            if isinstance(key, tuple)  # (method, _Capture): the capture found, or False
        ]
        assert captures and not any(captures)
    lab.journal.wait(lambda seen: all(a.cancelled for a in seen if a.step == "hang"), 10, "a")


def test_sync_reads_no_headers_of_a_call_whose_state_it_cannot_see() -> None:
    assert _sync._got_headers(object()) is False
    state = SimpleNamespace(initial_metadata=(("k", "v"),))
    assert _sync._got_headers(SimpleNamespace(_state=state)) is True


def test_grpcio_still_has_the_internals_the_sync_channel_reads(lab: Lab) -> None:
    # Not a fallback: here to say when a grpcio release moves them (then the fallbacks above
    # serve, a little slower: docs/architecture.md).
    lab.reset({"a": ("after_headers",)})
    with grpc_etcd.BalancedChannel(SERVICE, policy=Ordered(), config=HEDGE) as channel:
        channel.update(lab.snapshot())
        wait_for(lambda: len(channel._subs) == 3, 10, "three sub-channels")
        sub = channel._subs[lab.servers["a"].address]
        assert sub.core is not None
        multicallable = method(channel, "unary_unary")
        assert multicallable._capturing(sub, None) is not None
        future = sub.channel.unary_unary(
            "/test.Script/Unary",
            request_serializer=Request.SerializeToString,
        ).future(Request(input="x"), timeout=5)
        assert future.exception(5) is not None and _sync._got_headers(future)


# ---------------------------------------------------------------- asyncio


async def test_aio_hears_how_attempts_ended_when_grpc_aio_makes_it_wait(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A finished grpc.aio call answers code(), details() and its metadata without waiting
    # (grpcio 1.85); should one wait, the call's flow is told once it has answered.
    def later(coroutine: Any) -> Any:
        coroutine.close()
        raise _aio._Later

    monkeypatch.setattr(_aio, "_now", later)
    lab.reset({"a": ("unavailable",)})
    policy = Ordered()
    async with grpc_etcd.aio.BalancedChannel(
        SERVICE, policy=policy, config=THROTTLED_RETRY
    ) as channel:
        channel.update(lab.snapshot())
        assert await asyncio.to_thread(policy.built.wait, 10)
        policy.reset()
        answer = await method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert answer.output.startswith("b|")
        assert await asyncio.to_thread(policy.wait_done) == ["UNAVAILABLE", "OK"]
        assert throttle_tokens(channel) == 9.5  # one failure taken, one success given back


class _AioPassing(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


async def test_aio_hot_path_without_the_core_call_reads_the_public_code(lab: Lab) -> None:
    # An intercepted grpc.aio call has no _cython_call to ask is_ok(): its code() says, for
    # the hot path's failed attempt (a's: the flow retries it on b) and its successful one (c).
    lab.reset({"a": ("unavailable",)})
    policy = Ordered()
    async with grpc_etcd.aio.BalancedChannel(
        SERVICE, policy=policy, config=THROTTLED_RETRY, interceptors=[_AioPassing()]
    ) as channel:
        channel.update(lab.snapshot())
        assert await asyncio.to_thread(policy.built.wait, 10)
        policy.reset()
        call = method(channel, "unary_unary")
        assert (await call(Request(input="x"), timeout=5)).output.startswith("b|")
        assert throttle_tokens(channel) == 9.5  # a's failure took one, the success gave 0.5
        assert (await call(Request(input="y"), timeout=5)).output.startswith("c|")
        assert await asyncio.to_thread(policy.wait_done) == ["UNAVAILABLE", "OK", "OK"]
        assert throttle_tokens(channel) == 10


async def test_aio_hot_path_without_the_response_task_awaits_the_call_itself(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without grpc.aio's task for the response, the hot path awaits the grpc.aio call: an
    # answer (c's), a failed attempt (a's, which the flow retries on b) and a cancelled await
    # (a's second attempt hangs: the call ends CANCELLED) come out as through the task.
    monkeypatch.setattr(_aio, "_RESPONSE_TASK", "_no_such_task")
    lab.reset({"a": ("unavailable", "hang", "ok")})
    policy = Ordered()
    async with grpc_etcd.aio.BalancedChannel(
        SERVICE, policy=policy, config=THROTTLED_RETRY
    ) as channel:
        channel.update(lab.snapshot())
        assert await asyncio.to_thread(policy.built.wait, 10)
        policy.reset()
        unary = method(channel, "unary_unary")
        assert (await unary(Request(input="x"), timeout=5)).output.startswith("b|")
        assert (await unary(Request(input="y"), timeout=5)).output.startswith("c|")
        call = unary(Request(input="z"), timeout=5)
        waiting = asyncio.ensure_future(call)
        await asyncio.to_thread(lab.journal.wait, lambda seen: len(seen) == 4, 10, "a hang")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert call.cancelled() and await call.code() is grpc.StatusCode.CANCELLED
        assert await asyncio.to_thread(policy.wait_done) == ["UNAVAILABLE", "OK", "OK", "CANCELLED"]


async def test_grpcio_still_has_the_internals_the_aio_channel_reads(lab: Lab) -> None:
    # Not a fallback: here to say when a grpcio release moves them (docs/architecture.md).
    lab.reset()
    async with grpc.aio.insecure_channel(lab.servers["a"].address) as plain:
        call = plain.unary_unary(
            "/test.Script/Unary",
            request_serializer=Request.SerializeToString,
        )(Request(input="x"), timeout=5)
        assert isinstance(getattr(call, _aio._RESPONSE_TASK), asyncio.Future)
        assert call._cython_call.is_ok() is False  # (not ended yet)
        await call
        assert call._cython_call.is_ok() is True


# ---------------------------------------------------------------- OpenTelemetry's interceptors


class _Tracer:
    def __init__(self) -> None:
        self.started: list[tuple[Any, Any]] = []

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> str:
        self.started.append((args, kwargs))
        return "span"


class _OtelLike:
    """Where OpenTelemetry's client interceptor keeps its tracer (0.41b0 .. 0.66b2)."""

    __module__ = "opentelemetry.instrumentation.grpc._client"

    def __init__(self) -> None:
        self._tracer = _Tracer()


PEER = {"server.address": "10.0.0.7", "server.port": 50051}


def test_each_opentelemetry_interceptor_on_a_sub_channel_names_its_node() -> None:
    ours, theirs = _OtelLike(), _OtelLike()
    sync_like = SimpleNamespace(_interceptor=ours, _channel=SimpleNamespace(_channel=None))
    assert _tracing.name_peer(sync_like, "10.0.0.7:50051") == 1
    ours._tracer.start_as_current_span(name="/m", attributes={"rpc.method": "m"})
    assert _tracing.name_peer(sync_like, "10.0.0.7:50051") == 1  # again: not wrapped twice
    ours._tracer.start_as_current_span("/m", None, None, {"rpc.method": "m"})
    aio_like = SimpleNamespace(_unary_unary_interceptors=[theirs, object()])
    assert _tracing.name_peer(aio_like, "[::1]:7") == 1
    theirs._tracer.start_as_current_span(name="/m")
    inner = ours._tracer.inner
    assert inner.started == [
        ((), {"name": "/m", "attributes": {"rpc.method": "m", **PEER}}),
        (("/m", None, None, {"rpc.method": "m", **PEER}), {}),
    ]
    assert theirs._tracer.inner.started[0][1]["attributes"] == {
        "server.address": "::1",
        "server.port": 7,
    }


def test_an_interceptor_that_takes_a_host_and_port_is_given_them() -> None:
    newer = _OtelLike()
    newer._host = newer._port = None  # type: ignore[attr-defined]  # (later releases)
    assert _tracing.name_peer(SimpleNamespace(_interceptor=newer), "10.0.0.7:50051") == 1
    assert (newer._host, newer._port) == ("10.0.0.7", 50051)  # type: ignore[attr-defined]
    assert isinstance(newer._tracer, _Tracer)  # it names them itself


def test_without_opentelemetrys_internals_spans_go_without_the_node() -> None:
    foreign = SimpleNamespace(_tracer=_Tracer())  # someone else's interceptor: left alone
    bare = _OtelLike()
    del bare._tracer  # an OpenTelemetry release that keeps its tracer elsewhere
    channel = SimpleNamespace(_interceptor=foreign, _channel=SimpleNamespace(_interceptor=bare))
    assert _tracing.name_peer(channel, "10.0.0.7:50051") == 0
    assert isinstance(foreign._tracer, _Tracer)
    assert _tracing.name_peer(object(), "10.0.0.7:50051") == 0
    assert _tracing.peer_attributes("dns-name") == {"server.address": "dns-name"}
