"""The asyncio BalancedChannel against real grpc servers on loopback, fed hand-made snapshots."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from echo_servers import (
    FAST_RECONNECT,
    SERVICE,
    EchoServer,
    Request,
    dead_node,
    echo,
    free_port,
    snapshot,
    version_seen,
    who,
)

from grpc_etcd import Node, Snapshot, route
from grpc_etcd.aio import BalancedChannel
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.policies import NO_MATCH_DETAILS, Pick, VersionPolicy
from grpc_etcd.policies.base import Endpoint, Picker

Start = Callable[..., EchoServer]


@pytest.fixture
async def channel() -> AsyncIterator[BalancedChannel]:
    async with BalancedChannel(SERVICE, options=FAST_RECONNECT) as ch:
        yield ch


async def until(check: Callable[[], Any], what: str, within: float = 10) -> None:
    """Wait (without blocking the loop) until ``check()`` is true; fail naming ``what``."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def ready(channel: BalancedChannel, *servers: EchoServer) -> None:
    await until(
        lambda: all(
            channel.subchannel_states().get(s.address) == grpc.ChannelConnectivity.READY
            for s in servers
        ),
        f"READY connections to {[s.name for s in servers]}",
    )


# ------------------------------------------------------------------ routing


async def test_each_version_reaches_only_its_servers_and_spreads(
    start_server: Start, channel: BalancedChannel
) -> None:
    a1, a2, b1, b2 = (start_server(n) for n in ("a1", "a2", "b1", "b2"))
    channel.update(snapshot((a1, "v1"), (a2, "v1"), (b1, "v2"), (b2, "v2")))
    stub = ApiStub(channel)
    req = Request(input="x")

    by_metadata = Counter(
        [
            who(await stub.ApiTest(req, metadata=[("x-version", "v1")], timeout=5))
            for _ in range(1000)
        ]
    )
    with route(version="v2"):
        by_route = Counter([who(await stub.ApiTest(req, timeout=5)) for _ in range(1000)])
    anyone = Counter([who(await stub.ApiTest(req, timeout=5)) for _ in range(400)])

    assert set(by_metadata) == {"a1", "a2"}
    assert set(by_route) == {"b1", "b2"}
    assert min(by_metadata.values()) > 350
    assert min(by_route.values()) > 350
    assert set(anyone) == {"a1", "a2", "b1", "b2"}
    assert min(anyone.values()) > 50
    assert b1.calls["v2"] + b2.calls["v2"] == 1000
    assert a1.calls["v1"] + a2.calls["v1"] == 1000
    assert sum(s.calls[""] for s in (a1, a2, b1, b2)) == 400


async def test_route_in_concurrent_tasks_stays_with_its_task(start_server: Start) -> None:
    a, b = start_server("a"), start_server("b")
    async with BalancedChannel(SERVICE, version="v1") as channel:
        channel.update(snapshot((a, "v1"), (b, "v2")))
        stub = ApiStub(channel)

        async def ask(version: str | None) -> str:
            if version is None:
                return who(await stub.ApiTest(Request(input="x"), timeout=5))
            with route(version=version):
                await asyncio.sleep(0)  # let the other tasks run inside their own route()
                return who(await stub.ApiTest(Request(input="x"), timeout=5))

        answers = await asyncio.gather(*(ask(v) for v in ["v2", None, "v1"] * 20))
        assert answers == ["b", "a", "a"] * 20


async def test_no_match_fails_at_once_with_the_seeds_details(
    start_server: Start, channel: BalancedChannel
) -> None:
    channel.update(snapshot((start_server("a"), "v1")))
    call = ApiStub(channel).ApiTest(Request(input="x"), metadata=[("x-version", "v2")])
    assert call.done()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call, 1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == NO_MATCH_DETAILS
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    assert await call.details() == NO_MATCH_DETAILS
    assert len(await call.initial_metadata()) == 0
    assert len(await call.trailing_metadata()) == 0
    seen: list[Any] = []
    call.add_done_callback(seen.append)
    assert seen == [call]


async def test_no_deadline_and_nothing_registered_fails_at_once(channel: BalancedChannel) -> None:
    channel.update(Snapshot(SERVICE, {}, 7))
    stub = ApiStub(channel)
    for metadata in (None, [("x-version", "v1")]):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(stub.ApiTest(Request(input="x"), metadata=metadata), 5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == NO_MATCH_DETAILS


async def test_first_call_on_a_fresh_channel_succeeds(start_server: Start) -> None:
    a, b = start_server("a"), start_server("b")
    nodes = snapshot((a, "v1"), (b, "v2"))
    for _ in range(20):
        async with BalancedChannel(SERVICE) as channel:
            channel.update(nodes)
            stub = ApiStub(channel)
            assert (
                who(
                    await stub.ApiTest(
                        Request(input="x"), metadata=[("x-version", "v1")], timeout=5
                    )
                )
                == "a"
            )
            assert (
                who(
                    await stub.ApiTest(
                        Request(input="x"), metadata=[("x-version", "v2")], timeout=5
                    )
                )
                == "b"
            )


async def test_calls_wait_for_the_first_snapshot(
    start_server: Start, channel: BalancedChannel
) -> None:
    a = start_server("a")
    stub = ApiStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApiTest(Request(input="x"), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    waiting = stub.ApiTest(Request(input="x"), timeout=10)
    assert not waiting.done()
    assert 9 < waiting.time_remaining() <= 10
    channel.update(snapshot((a, "v1")))
    assert who(await waiting) == "a"
    assert await waiting.code() == grpc.StatusCode.OK
    assert waiting.done()


async def test_a_waiting_call_can_be_cancelled(channel: BalancedChannel) -> None:
    waiting = ApiStub(channel).ApiTest(Request(input="x"), timeout=10)
    ended: list[Any] = []
    waiting.add_done_callback(ended.append)
    assert waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled() and waiting.done()
    assert await waiting.code() == grpc.StatusCode.CANCELLED
    assert ended == [waiting]


# ------------------------------------------------------------------ node set changes


async def test_removing_a_node_loses_none_of_its_calls_in_flight(
    start_server: Start, channel: BalancedChannel
) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v1")))
    await ready(channel, a, b)
    stub = ApiStub(channel)
    pending = [stub.ApiTest(Request(input="block"), timeout=30) for _ in range(20)]
    await until(lambda: a.blocked + b.blocked == 20, "20 calls held by the servers")
    assert a.blocked > 0

    channel.update(snapshot((b, "v1"), revision=2))
    assert {who(await stub.ApiTest(Request(input="x"), timeout=5)) for _ in range(50)} == {"b"}
    a.gate.set()
    b.gate.set()
    answers = Counter(who(r) for r in await asyncio.gather(*pending))
    assert answers["a"] == a.blocked
    assert sum(answers.values()) == 20
    await until(lambda: not channel._draining, "the removed node's connection to close", 5)


async def test_a_removed_nodes_calls_are_cut_after_drain_timeout(start_server: Start) -> None:
    a = start_server("a")
    async with BalancedChannel(SERVICE, drain_timeout=0.3) as channel:
        channel.update(snapshot((a, "v1")))
        call = ApiStub(channel).ApiTest(Request(input="block"), timeout=30)
        await until(lambda: a.blocked == 1, "the call to reach a")
        started = time.monotonic()
        channel.update(Snapshot(SERVICE, {}, 2))
        with pytest.raises(asyncio.CancelledError):
            await call  # grpc.aio's close() cancels what is left after the grace
        assert await call.code() == grpc.StatusCode.CANCELLED
        assert 0.25 < time.monotonic() - started < 3


async def test_a_restarted_server_is_used_again(
    start_server: Start, channel: BalancedChannel
) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v1")))
    await ready(channel, a, b)
    stub = ApiStub(channel)
    req = Request(input="x")

    a.stop()
    await until(
        lambda: channel.subchannel_states()[a.address] != grpc.ChannelConnectivity.READY,
        "the channel to see a go",
        5,
    )
    assert {who(await stub.ApiTest(req, timeout=5)) for _ in range(50)} == {"b"}

    a.start(a.port)
    deadline = time.monotonic() + 15
    while who(await stub.ApiTest(req, timeout=5)) != "a":
        assert time.monotonic() < deadline, "a was never used again"
    assert Counter([who(await stub.ApiTest(req, timeout=5)) for _ in range(200)])["a"] > 50


async def test_records_with_one_address_share_one_connection(
    start_server: Start, channel: BalancedChannel
) -> None:
    a = start_server("a")
    channel.update(snapshot((a, "v1", "old"), (a, "v2", "new")))
    stub = ApiStub(channel)
    for version in ("v1", "v2"):
        answer = await stub.ApiTest(
            Request(input="x"), metadata=[("x-version", version)], timeout=5
        )
        assert (who(answer), version_seen(answer)) == ("a", version)
    (sub,) = channel._subs.values()
    channel.update(snapshot((a, "v2", "new"), revision=2))
    assert channel._subs[a.address] is sub and not channel._draining


# ------------------------------------------------------------------ waiting and deadlines


async def test_unreachable_nodes_fail_fast_unless_wait_for_ready(
    start_server: Start, channel: BalancedChannel
) -> None:
    port = free_port()
    channel.update(dead_node("v1", port))
    stub = ApiStub(channel)
    req = Request(input="x")

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(stub.ApiTest(req, timeout=20), 10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in (info.value.details() or "")
    assert time.monotonic() - started < 5

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApiTest(req, timeout=0.5, wait_for_ready=True)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 < time.monotonic() - started < 3

    waiting = stub.ApiTest(req, timeout=20, wait_for_ready=True)
    await asyncio.sleep(0)
    assert not waiting.done()
    start_server("late", port)
    assert who(await waiting) == "late"


# ------------------------------------------------------------------ the grpc.aio.Channel interface


async def _requests() -> AsyncIterator[Request]:
    for c in "ab":
        yield Request(input=c)


async def _streams(
    channel: BalancedChannel,
    metadata: Sequence[tuple[str, str]],
    before_reading: Callable[[], None] = lambda: None,
) -> list[str]:
    """Start a call of every streaming kind and style, run ``before_reading``, read them all."""
    echo_ = {
        kind: echo(channel, kind) for kind in ("unary_stream", "stream_unary", "stream_stream")
    }
    iterated = echo_["unary_stream"](Request(input="s"), metadata=metadata, timeout=5)
    read = echo_["unary_stream"](Request(input="r"), metadata=metadata, timeout=5)
    sent = echo_["stream_unary"](_requests(), metadata=metadata, timeout=5)
    writer = echo_["stream_unary"](metadata=metadata, timeout=5)
    both = echo_["stream_stream"](_requests(), metadata=metadata, timeout=5)
    chat = echo_["stream_stream"](metadata=metadata, timeout=5)
    # Writing before the node is known waits for it.
    written = asyncio.ensure_future(writer.write(Request(input="w")))
    before_reading()

    outputs = [r.output async for r in iterated]
    outputs.append((await read.read()).output)
    outputs.append((await sent).output)
    await written
    await writer.done_writing()
    outputs.append((await writer).output)
    outputs += [r.output async for r in both]
    await chat.write(Request(input="c"))
    outputs.append((await chat.read()).output)
    await chat.done_writing()
    assert await chat.code() == grpc.StatusCode.OK
    assert await iterated.code() == grpc.StatusCode.OK
    return outputs


_EXPECTED_STREAMS = [
    "b|v2|s0",
    "b|v2|s1",
    "b|v2|s2",
    "b|v2|r0",
    "b|v2|ab",
    "b|v2|w",
    "b|v2|a",
    "b|v2|b",
    "b|v2|c",
]


async def test_streaming_kinds(start_server: Start, channel: BalancedChannel) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v2")))
    await ready(channel, a, b)
    assert await _streams(channel, [("x-version", "v2")]) == _EXPECTED_STREAMS


async def test_streaming_kinds_that_wait_for_a_node(
    start_server: Start, channel: BalancedChannel
) -> None:
    a, b = start_server("a"), start_server("b")
    # Every call starts before the first snapshot, so each one waits for its node.
    nodes = snapshot((a, "v1"), (b, "v2"))
    assert (
        await _streams(channel, [("x-version", "v2")], lambda: channel.update(nodes))
        == _EXPECTED_STREAMS
    )


async def test_failed_streams_raise_aio_rpc_errors(
    start_server: Start, channel: BalancedChannel
) -> None:
    channel.update(snapshot((start_server("a"), "v1")))
    v9 = [("x-version", "v9")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in echo(channel, "unary_stream")(Request(), metadata=v9)]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError):
        await echo(channel, "stream_unary")(metadata=v9).write(Request())
    with pytest.raises(grpc.aio.AioRpcError):
        await echo(channel, "stream_stream")(metadata=v9).read()


class _Tracer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.seen.append(details.metadata)
        details.metadata.add("x-trace", "t1")
        return await continuation(details, request)


async def test_interceptors_run_on_the_picked_node(start_server: Start) -> None:
    a = start_server("a")
    tracer = _Tracer()
    async with BalancedChannel(SERVICE, interceptors=[tracer]) as channel:
        channel.update(snapshot((a, "v1")))
        with route(version="v1"):
            assert who(await ApiStub(channel).ApiTest(Request(input="x"), timeout=5)) == "a"
    assert a.metadata[-1]["x-trace"] == "t1"
    # Interceptors run after the pick: they see the version the channel added.
    assert tracer.seen[-1]["x-version"] == "v1"


async def test_connectivity_follows_the_nodes(
    start_server: Start, channel: BalancedChannel
) -> None:
    assert channel.get_state() == grpc.ChannelConnectivity.CONNECTING
    ready_task = asyncio.ensure_future(channel.channel_ready())
    await asyncio.sleep(0)
    assert not ready_task.done()
    channel.update(snapshot((start_server("a"), "v1")))
    await asyncio.wait_for(ready_task, 10)
    assert channel.get_state() == grpc.ChannelConnectivity.READY
    changed = asyncio.ensure_future(channel.wait_for_state_change(grpc.ChannelConnectivity.READY))
    await asyncio.sleep(0)
    assert not changed.done()
    channel.update(Snapshot(SERVICE, {}, 2))
    await asyncio.wait_for(changed, 5)
    assert channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE


# ------------------------------------------------------------------ done callbacks, closing


class _Timed:
    name = "timed"

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self._inner = VersionPolicy()

    def build(self, endpoints: Sequence[Endpoint[Any]]) -> Picker[Any]:
        inner = self._inner.build(endpoints)
        record = self.done

        class _Picker:
            def pick(self, call: Any) -> Pick[Any]:
                return Pick(
                    inner.pick(call).subchannel,
                    lambda info: record.append((info.code, info.latency)),
                )

        return _Picker()


async def test_done_callbacks_see_every_calls_status(start_server: Start) -> None:
    a = start_server("a")
    policy = _Timed()
    async with BalancedChannel(SERVICE, policy=policy) as channel:
        stub = ApiStub(channel)
        deferred = stub.ApiTest(Request(input="x"), timeout=5)  # waits for the snapshot
        channel.update(snapshot((a, "v1")))
        await deferred
        await stub.ApiTest(Request(input="x"), timeout=5)
        [r async for r in echo(channel, "unary_stream")(Request(input="s"), timeout=5)]
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ApiTest(Request(input="fail"), timeout=5)
        await until(lambda: len(policy.done) == 4, "four done callbacks", 5)
    assert sorted(code for code, _ in policy.done) == ["NOT_FOUND", "OK", "OK", "OK"]
    assert all(latency > 0 for _, latency in policy.done)


async def test_close_stops_everything_promptly(start_server: Start) -> None:
    a = start_server("a")
    channel = BalancedChannel(SERVICE)
    closed: list[str] = []

    async def stop_watcher() -> None:
        closed.append("async")

    channel.add_close_callback(lambda: closed.append("sync"))
    channel.add_close_callback(stop_watcher)
    many = {f"/k/{i}": Node(SERVICE, str(i), f"127.0.0.1:{1000 + i}", "v1") for i in range(200)}
    channel.update(Snapshot(SERVICE, {**many, **snapshot((a, "v1")).nodes}, 1))
    stub = ApiStub(channel)
    assert who(await stub.ApiTest(Request(input="x"), timeout=5)) == "a"
    watchers = [sub.task for sub in channel._subs.values()]

    started = time.monotonic()
    await channel.close()
    assert time.monotonic() - started < 1
    assert all(task.done() for task in watchers)
    assert closed == ["sync", "async"]
    with pytest.raises(grpc.aio.UsageError):
        stub.ApiTest(Request(input="x"), timeout=5)
    await channel.close()
    channel.update(snapshot((a, "v1")))
    assert channel.subchannel_states() == {}


async def test_close_with_grace_lets_calls_finish(start_server: Start) -> None:
    a = start_server("a")
    channel = BalancedChannel(SERVICE)
    channel.update(snapshot((a, "v1")))
    call = ApiStub(channel).ApiTest(Request(input="block"), timeout=30)
    await until(lambda: a.blocked == 1, "the call to reach a")
    closing = asyncio.ensure_future(channel.close(grace=10))
    done, _ = await asyncio.wait({closing}, timeout=0.1)
    assert not done  # close() is waiting for the call
    a.gate.set()
    assert who(await call) == "a"
    await asyncio.wait_for(closing, 5)


async def test_close_does_not_wait_out_a_removed_nodes_drain(start_server: Start) -> None:
    a = start_server("a")
    channel = BalancedChannel(SERVICE, drain_timeout=30)
    channel.update(snapshot((a, "v1")))
    call = ApiStub(channel).ApiTest(Request(input="block"), timeout=30)
    await until(lambda: a.blocked == 1, "the call to reach a")
    channel.update(Snapshot(SERVICE, {}, 2))
    started = time.monotonic()
    await channel.close()
    assert time.monotonic() - started < 2
    assert not channel._draining
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_close_fails_calls_waiting_for_a_node(channel: BalancedChannel) -> None:
    waiting = ApiStub(channel).ApiTest(Request(input="x"), timeout=30)
    await asyncio.sleep(0)  # let it start waiting
    await channel.close()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await waiting
    assert info.value.code() == grpc.StatusCode.CANCELLED
