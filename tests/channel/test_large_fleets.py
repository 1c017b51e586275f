"""ROUTING.md's "Large fleets" keys in running channels of both twins, against real etcd and
real servers: slow start, the panic threshold, locality."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import grpc
from echo_servers import EchoServer, Request, who
from grpc_health.v1 import health_pb2
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


# ---------------------------------------------------------------- panic threshold

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PANIC = {"healthCheckConfig": {"serviceName": ""}, "loadBalancingConfig": [{"round_robin": {}}]}


def test_sync_below_the_panic_threshold_calls_spread_over_every_ready_node(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"p{i}") for i in range(4)]
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for server in servers:
            registry.register("test.srv.panic", address=server.address, version="v1")
        calm = registry.channel("test.srv.panic", config=PANIC)
        panic = registry.channel("test.srv.panic", config={**PANIC, "panicThreshold": 50})
        calm_api, panic_api = ApiStub(calm), ApiStub(panic)

        def spread(api: ApiStub, calls: int = 40) -> set[str]:
            return {who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls)}

        wait_for(lambda: len(spread(calm_api)) == len(spread(panic_api)) == 4, 10, "4 nodes")
        for server in servers[1:]:  # 1 of 4 serving: 25 % < 50 %
            server.health.set("", NOT_SERVING)
        wait_for(lambda: spread(calm_api) == {"p0"}, 5, "the calm channel on p0 alone")
        assert spread(panic_api) == {"p0", "p1", "p2", "p3"}


async def test_aio_below_the_panic_threshold_calls_spread_over_every_ready_node(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"p{i}") for i in range(4)]
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for server in servers:
            await registry.register("test.srv.panic-aio", address=server.address, version="v1")
        calm = registry.channel("test.srv.panic-aio", config=PANIC)
        panic = registry.channel("test.srv.panic-aio", config={**PANIC, "panicThreshold": 50})
        calm_api, panic_api = ApiStub(calm), ApiStub(panic)

        async def spread(api: ApiStub, calls: int = 40) -> set[str]:
            return {who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls)}

        async def four() -> bool:
            return len(await spread(calm_api)) == len(await spread(panic_api)) == 4

        async def calm_on_one() -> bool:
            return await spread(calm_api) == {"p0"}

        await async_wait_for(four, 10, "4 nodes")
        for server in servers[1:]:
            server.health.set("", NOT_SERVING)
        await async_wait_for(calm_on_one, 5, "the calm channel on p0 alone")
        assert await spread(panic_api) == {"p0", "p1", "p2", "p3"}


# ---------------------------------------------------------------- prefer_local

PREFER_LOCAL = {
    "locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 6},
    "loadBalancingConfig": [{"round_robin": {}}],
}
#: 1 of 3 local nodes usable: 1.4 / 3 = 46.7 % local; 400 calls: sd 2.5 points, bound 10.
ONE_OF_THREE = 1.4 / 3


def _local(counts: Counter[str]) -> float:
    """The share of the calls answered in zone a (a call that failed counts as not local:
    a server stopped under a call fails it)."""
    return sum(n for name, n in counts.items() if name.startswith("a")) / sum(counts.values())


def _all_remote(counts: Counter[str]) -> bool:
    return all(name.startswith("b") for name in counts)


def test_sync_prefer_local_spills_over_as_local_nodes_go(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    local = [start_server(f"a{i}") for i in range(3)]
    remote = [start_server(f"b{i}") for i in range(3)]
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for zone, group in (("a", local), ("b", remote)):
            for server in group:
                registry.register(
                    "test.srv.zones", address=server.address, version="v1", metadata={"zone": zone}
                )
        channel = registry.channel("test.srv.zones", config=PREFER_LOCAL, source={"zone": "a"})
        api = ApiStub(channel)

        def spread(calls: int) -> Counter[str]:
            counts: Counter[str] = Counter()
            for _ in range(calls):
                try:
                    counts[who(api.ApiTest(Request(input="x"), timeout=5))] += 1
                except grpc.RpcError as exc:
                    counts[exc.code().name] += 1
            return counts

        wait_for(lambda: _ready(channel, 6), 10, "six nodes")
        assert set(spread(60)) == {"a0", "a1", "a2"}, "all local while every local node is up"
        for server in local[1:]:
            server.stop()
        wait_for(lambda: abs(_local(spread(400)) - ONE_OF_THREE) < 0.1, 5, "47 % local")
        local[0].stop()
        began = time.monotonic()
        wait_for(lambda: _all_remote(spread(20)), 1.0, "every call to zone b")
        assert time.monotonic() - began < 1.0


async def test_aio_prefer_local_spills_over_as_local_nodes_go(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    local = [start_server(f"a{i}") for i in range(3)]
    remote = [start_server(f"b{i}") for i in range(3)]
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for zone, group in (("a", local), ("b", remote)):
            for server in group:
                await registry.register(
                    "test.srv.zones-aio",
                    address=server.address,
                    version="v1",
                    metadata={"zone": zone},
                )
        channel = registry.channel("test.srv.zones-aio", config=PREFER_LOCAL, source={"zone": "a"})
        api = ApiStub(channel)

        async def spread(calls: int) -> Counter[str]:
            counts: Counter[str] = Counter()
            for _ in range(calls):
                try:
                    counts[who(await api.ApiTest(Request(input="x"), timeout=5))] += 1
                except grpc.RpcError as exc:
                    counts[exc.code().name] += 1
            return counts

        async def six() -> bool:
            return _ready(channel, 6)

        async def spilled() -> bool:
            return abs(_local(await spread(400)) - ONE_OF_THREE) < 0.1

        async def all_remote() -> bool:
            return _all_remote(await spread(20))

        await async_wait_for(six, 10, "six nodes")
        assert set(await spread(60)) == {"a0", "a1", "a2"}
        for server in local[1:]:
            server.stop()
        await async_wait_for(spilled, 5, "47 % local")
        local[0].stop()
        began = time.monotonic()
        await async_wait_for(all_remote, 1.0, "every call to zone b")
        assert time.monotonic() - began < 1.0


# ---------------------------------------------------------------- zone_aware

ZONE_AWARE = {
    "locality": {"key": "zone", "mode": "zone_aware", "minClusterSize": 3},
    "loadBalancingConfig": [{"round_robin": {}}],
}
#: Callers 2/3 in zone a, nodes 1/3 in a (Envoy's shares): an a-channel sends 50 % to a;
#: 400 calls (a random split between the zones): sd 2.5 points, bound 10.
CALLERS = ("a", "a", "b")


def test_sync_zone_aware_weighs_zones_by_the_channels_client_keys(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for name, zone in (("a0", "a"), ("b0", "b"), ("b1", "b")):
            registry.register(
                "test.srv.aware",
                address=start_server(name).address,
                version="v1",
                metadata={"zone": zone},
            )
        channels = [
            registry.channel("test.srv.aware", config=ZONE_AWARE, source={"zone": zone})
            for zone in CALLERS
        ]
        first, _, b_channel = (ApiStub(channel) for channel in channels)

        def local(api: ApiStub, calls: int = 400) -> float:
            answers = Counter(who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls))
            return _local(answers)

        wait_for(lambda: abs(local(first) - 0.5) < 0.1, 15, "an a-channel 50 % in zone a")
        wait_for(lambda: local(b_channel, 100) == 0, 5, "the b-channel all in zone b")
        channels[1].close()  # its key goes: callers 1/2 in a, an a-channel keeps 2/3 local
        wait_for(lambda: abs(local(first) - 2 / 3) < 0.1, 15, "2/3 in zone a")


async def test_aio_zone_aware_weighs_zones_by_the_channels_client_keys(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for name, zone in (("a0", "a"), ("b0", "b"), ("b1", "b")):
            await registry.register(
                "test.srv.aware-aio",
                address=start_server(name).address,
                version="v1",
                metadata={"zone": zone},
            )
        channels = [
            registry.channel("test.srv.aware-aio", config=ZONE_AWARE, source={"zone": zone})
            for zone in CALLERS
        ]
        first, _, b_channel = (ApiStub(channel) for channel in channels)

        async def local(api: ApiStub, calls: int = 400) -> float:
            answers = Counter(
                [who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls)]
            )
            return _local(answers)

        async def half() -> bool:
            return abs(await local(first) - 0.5) < 0.1

        async def b_only() -> bool:
            return await local(b_channel, 100) == 0

        async def two_thirds() -> bool:
            return abs(await local(first) - 2 / 3) < 0.1

        await async_wait_for(half, 15, "an a-channel 50 % in zone a")
        await async_wait_for(b_only, 5, "the b-channel all in zone b")
        await channels[1].close()
        await async_wait_for(two_thirds, 15, "2/3 in zone a")
