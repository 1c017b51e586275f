"""ROUTING.md's "Large fleets" keys in running channels of both twins, against real etcd and
real servers: slow start, the panic threshold, locality."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import grpc
from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.testing import EtcdServer

READY = grpc.ChannelConnectivity.READY

# ---------------------------------------------------------------- slow start

#: A 2 s window from 10 %: in its first half second a new node gets a factor <= 0.25, so at
#: most 0.25 / 3.25 = 7.7 % of the calls of four nodes; warm, 25 %. The first nodes warm up
#: too (they are new to the channel): the new one comes once they are warm.
WINDOW = 2.0
SLOW_START = {
    "loadBalancingConfig": [
        {"round_robin": {"slowStartConfig": {"slowStartWindow": "2s", "minWeightPercent": 10}}}
    ]
}


def _early_bound(elapsed: float) -> float:
    """The most the new node can get in its first ``elapsed`` seconds, plus 7 points (3.5 sd
    of a share of 200 calls near 8 %): a slow machine measures a later factor."""
    factor = max(0.1, min(1.0, elapsed / WINDOW))
    return factor / (3 + factor) + 0.07


def _ready(channel: grpc_etcd.BalancedChannel | grpc_etcd.aio.BalancedChannel, n: int) -> bool:
    states = channel.subchannel_states()
    return len(states) == n and set(states.values()) == {READY}


def test_sync_a_new_node_warms_up(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(name) for name in ("s1", "s2", "s3", "new")]
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for server in servers[:3]:
            registry.register("test.srv.slow", address=server.address, version="v1")
        channel = registry.channel("test.srv.slow", config=SLOW_START)
        api = ApiStub(channel)

        def spread(calls: int) -> Counter[str]:
            return Counter(who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls))

        wait_for(lambda: _ready(channel, 3) and len(spread(30)) == 3, 10, "three nodes")
        warm = time.monotonic() + WINDOW
        wait_for(lambda: time.monotonic() > warm, WINDOW + 1, "the first three warm")
        registry.register("test.srv.slow", address=servers[3].address, version="v1")
        wait_for(lambda: _ready(channel, 4), 10, "the new node READY")
        began = time.monotonic()
        early = spread(200)
        assert early["new"] / 200 < _early_bound(time.monotonic() - began), early
        wait_for(lambda: abs(spread(400)["new"] / 400 - 0.25) < 0.08, 15, "a full share")


async def test_aio_a_new_node_warms_up(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(name) for name in ("s1", "s2", "s3", "new")]
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for server in servers[:3]:
            await registry.register("test.srv.slow-aio", address=server.address, version="v1")
        channel = registry.channel("test.srv.slow-aio", config=SLOW_START)
        api = ApiStub(channel)

        async def spread(calls: int) -> Counter[str]:
            return Counter(
                [who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls)]
            )

        async def three() -> bool:
            return _ready(channel, 3) and len(await spread(30)) == 3

        async def four() -> bool:
            return _ready(channel, 4)

        async def full_share() -> bool:
            return abs((await spread(400))["new"] / 400 - 0.25) < 0.08

        await async_wait_for(three, 10, "three nodes")
        warm = time.monotonic() + WINDOW

        async def warmed() -> bool:
            return time.monotonic() > warm

        await async_wait_for(warmed, WINDOW + 1, "the first three warm")
        await registry.register("test.srv.slow-aio", address=servers[3].address, version="v1")
        await async_wait_for(four, 10, "the new node READY")
        began = time.monotonic()
        early = await spread(200)
        assert early["new"] / 200 < _early_bound(time.monotonic() - began), early
        await async_wait_for(full_share, 15, "a full share")
