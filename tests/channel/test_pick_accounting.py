"""Both twins: a pick's done callback runs exactly once, calls are counted in flight, and a
resolver error gives way to the first snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest
from echo_servers import SERVICE, EchoServer, Request, echo, snapshot, who
from waiting import wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.policies import Pick, VersionPolicy
from grpc_etcd.policies.base import DoneInfo, Endpoint, Picker

Start = Callable[..., EchoServer]


class _Counting:
    """The version policy, counting its picks and recording every done callback it hears.

    ``before_pick`` (run once, inside the next pick) lets a test change the channel between a
    pick and the call's start, as another thread could.
    """

    name = "counting"

    def __init__(self) -> None:
        self.picks = 0
        self.done: list[DoneInfo] = []
        self.before_pick: Callable[[], None] | None = None
        self._inner = VersionPolicy()

    def build(self, endpoints: Sequence[Endpoint[Any]]) -> Picker[Any]:
        inner = self._inner.build(endpoints)
        policy = self

        class _Picker:
            def pick(self, call: Any) -> Pick[Any]:
                subchannel = inner.pick(call).subchannel
                policy.picks += 1
                hook, policy.before_pick = policy.before_pick, None
                if hook is not None:
                    hook()
                return Pick(subchannel, policy.done.append)

        return _Picker()

    def codes(self) -> list[str]:
        return sorted(info.code for info in self.done)


# ------------------------------------------------------------------ sync


def test_sync_pick_thrown_away_is_reported_cancelled(start_server: Start) -> None:
    a, b = start_server("a"), start_server("b")
    policy = _Counting()
    with grpc_etcd.BalancedChannel(SERVICE, policy=policy) as channel:
        channel.update(snapshot((a, "v1")))
        stub = ApiStub(channel)
        assert who(stub.ApiTest(Request(input="x"), timeout=5)) == "a"
        # Between the pick (of a) and the call's start, a is removed: the call picks again.
        policy.before_pick = lambda: channel.update(snapshot((b, "v1")))
        assert who(stub.ApiTest(Request(input="x"), timeout=5)) == "b"
        assert policy.picks == 3 and policy.codes() == ["CANCELLED", "OK", "OK"]
        assert policy.done[1] == DoneInfo("CANCELLED", 0.0)
        # The same on the non-blocking path.
        policy.before_pick = lambda: channel.update(snapshot((a, "v1")))
        assert who(stub.ApiTest.future(Request(input="x"), timeout=5).result()) == "a"
        wait_for(lambda: len(policy.done) == policy.picks, 5, "a done callback per pick")
        assert policy.codes() == ["CANCELLED"] * 2 + ["OK"] * 3


def test_sync_call_that_fails_to_start_is_reported(start_server: Start) -> None:
    a = start_server("a")
    policy = _Counting()
    with grpc_etcd.BalancedChannel(SERVICE, policy=policy) as channel:
        channel.update(snapshot((a, "v1")))
        stub = ApiStub(channel)
        bad: Any = "no such compression"
        for start in (stub.ApiTest, stub.ApiTest.with_call, stub.ApiTest.future):
            with pytest.raises(KeyError):
                start(Request(input="x"), timeout=5, compression=bad)
        with pytest.raises(KeyError):
            echo(channel, "unary_stream")(Request(input="s"), timeout=5, compression=bad)
        assert policy.picks == 4 and policy.codes() == ["UNKNOWN"] * 4
        assert all(not sub.inflight for sub in channel._subs.values())


def test_sync_calls_are_counted_in_flight(start_server: Start) -> None:
    a = start_server("a")
    with grpc_etcd.BalancedChannel(SERVICE) as channel:
        channel.update(snapshot((a, "v1")))
        stub = ApiStub(channel)
        assert who(stub.ApiTest(Request(input="x"), timeout=5)) == "a"
        held = stub.ApiTest.future(Request(input="block"), timeout=10)
        a.wait_blocked(1)
        (sub,) = channel._subs.values()
        assert len(sub.inflight) == 1
        a.gate.set()
        held.result()
        wait_for(lambda: not sub.inflight, 5, "the call to leave the count")


def test_sync_resolver_error_gives_way_to_the_first_snapshot(start_server: Start) -> None:
    a = start_server("a")
    with grpc_etcd.BalancedChannel(SERVICE) as channel:
        channel.resolver_error("etcd is down")
        with pytest.raises(grpc.RpcError) as failed:
            ApiStub(channel).ApiTest(Request(input="x"), timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert failed.value.details() == f"cannot resolve {SERVICE}: etcd is down"
        channel.update(snapshot((a, "v1")))
        assert who(ApiStub(channel).ApiTest(Request(input="x"), timeout=5)) == "a"
        channel.resolver_error("etcd is down again")  # the last snapshot stands
        assert who(ApiStub(channel).ApiTest(Request(input="x"), timeout=5)) == "a"


# ------------------------------------------------------------------ aio


async def test_aio_done_once_per_pick_and_counted_in_flight(start_server: Start) -> None:
    a = start_server("a")
    policy = _Counting()
    async with grpc_etcd.aio.BalancedChannel(SERVICE, policy=policy) as channel:
        channel.update(snapshot((a, "v1")))
        stub = ApiStub(channel)
        assert who(await stub.ApiTest(Request(input="x"), timeout=5)) == "a"
        held = stub.ApiTest(Request(input="block"), timeout=10)
        await asyncio.to_thread(a.wait_blocked, 1)
        (sub,) = channel._subs.values()
        assert len(sub.inflight) == 1
        a.gate.set()
        await held
        bad: Any = "no such compression"
        with pytest.raises(KeyError):
            stub.ApiTest(Request(input="x"), timeout=5, compression=bad)
        for _ in range(100):
            if len(policy.done) == policy.picks:
                break
            await asyncio.sleep(0.01)
        assert policy.picks == 3 and policy.codes() == ["OK", "OK", "UNKNOWN"]
        assert not sub.inflight


async def test_aio_deferred_call_reports_once(start_server: Start) -> None:
    a = start_server("a")
    policy = _Counting()
    async with grpc_etcd.aio.BalancedChannel(SERVICE, policy=policy) as channel:
        waiting = ApiStub(channel).ApiTest(Request(input="x"), timeout=5)  # no snapshot yet
        channel.update(snapshot((a, "v1")))
        assert who(await waiting) == "a"
        for _ in range(100):
            if policy.done:
                break
            await asyncio.sleep(0.01)
        assert policy.picks == 1 and policy.codes() == ["OK"]


async def test_aio_resolver_error_gives_way_to_the_first_snapshot(start_server: Start) -> None:
    a = start_server("a")
    async with grpc_etcd.aio.BalancedChannel(SERVICE) as channel:
        channel.resolver_error("etcd is down")
        assert channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        with pytest.raises(grpc.RpcError) as failed:
            await ApiStub(channel).ApiTest(Request(input="x"), timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert failed.value.details() == f"cannot resolve {SERVICE}: etcd is down"
        channel.update(snapshot((a, "v1")))
        assert who(await ApiStub(channel).ApiTest(Request(input="x"), timeout=5)) == "a"
