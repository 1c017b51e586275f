"""Subsetting against real etcd and real servers, in both twins: a channel connects to exactly
the nodes of its subsets (``subchannel_states()``), and calls go only there."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.clients import clients_prefix
from grpc_etcd.config import config_key
from grpc_etcd.demo import api_pb2_grpc
from grpc_etcd.policies._subsetting import Zones, take
from grpc_etcd.policies.deterministic_subsetting import deterministic_subset, zoned_rings
from grpc_etcd.testing import EtcdServer, TcpProxy

SERVICE = "t.srv.subset"
DETERMINISTIC = {"loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 2}}]}


def _expected(channel: Any, addresses: Sequence[str], size: int = 2) -> set[str] | None:
    """The subset the channel should hold once its view counts every channel, else None."""
    view = channel._balancer.clients
    if view is None or not view.known:
        return None
    return set(deterministic_subset(sorted(addresses), (view.index, view.count), size))


def _settled(channels: Sequence[Any], addresses: Sequence[str]) -> bool:
    for channel in channels:
        view = channel._balancer.clients
        if view is None or view.count != len(channels) or channel.snapshot is None:
            return False
        if len(channel.snapshot) != len(addresses):
            return False
        if set(channel.subchannel_states()) != _expected(channel, addresses):
            return False
    return True


def _who(channel: Any, n: int = 40) -> set[str]:
    api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
    return {who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(n)}


def test_sync_channels_connect_only_to_their_subsets(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"s{i}") for i in range(6)]
    names = {s.address: s.name for s in servers}
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for server in servers:
            registry.register(SERVICE, address=server.address)
        channels = [registry.channel(SERVICE, config=DETERMINISTIC) for _ in range(3)]
        addresses = list(names)
        wait_for(lambda: _settled(channels, addresses), 10, "every channel on its subset")
        held = [set(c.subchannel_states()) for c in channels]
        # 3 channels x 2 nodes over 6 nodes: every node in exactly one subset.
        assert sorted(a for h in held for a in h) == sorted(addresses)
        for channel, subset in zip(channels, held, strict=True):
            assert _who(channel) == {names[a] for a in subset}

        late = start_server("s6")
        names[late.address] = late.name
        registry.register(SERVICE, address=late.address)
        addresses.append(late.address)
        wait_for(lambda: _settled(channels, addresses), 10, "the subsets after a node joined")
        moved = [len(set(c.subchannel_states()) - h) for c, h in zip(channels, held, strict=True)]
        assert max(moved) <= 2

        # A config from etcd switches to random_subsetting: no client keys any more.
        random3 = {"loadBalancingConfig": [{"random_subsetting": {"subsetSize": 3}}]}
        registry.client.put(config_key(SERVICE), json.dumps(random3))
        wait_for(lambda: all(len(c.subchannel_states()) == 3 for c in channels), 10, "subsets of 3")
        wait_for(
            lambda: not registry.client.get_prefix(clients_prefix(SERVICE))[0], 10, "keys gone"
        )
        for channel in channels:
            assert _who(channel, 60) == {names[a] for a in channel.subchannel_states()}
        registry.client.delete(config_key(SERVICE))
        wait_for(lambda: _settled(channels, addresses), 10, "deterministic subsets again")


async def test_aio_channels_connect_only_to_their_subsets(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"s{i}") for i in range(4)]
    names = {s.address: s.name for s in servers}
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for server in servers:
            await registry.register(SERVICE, address=server.address)
        channels = [registry.channel(SERVICE, config=DETERMINISTIC) for _ in range(2)]

        async def settled() -> bool:
            return _settled(channels, list(names))

        await async_wait_for(settled, 10, "every channel on its subset")
        held = [set(c.subchannel_states()) for c in channels]
        assert sorted(a for h in held for a in h) == sorted(names)
        for channel, subset in zip(channels, held, strict=True):
            api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            answers = {who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(30)}
            assert answers == {names[a] for a in subset}
        await channels[0].close()

        async def alone() -> bool:
            return _settled(channels[1:], list(names)) and len(channels[1].subchannel_states()) == 2

        await async_wait_for(alone, 10, "the last channel to take its place alone")


# ---------------------------------------------------------------- with a locality

ZONED = {
    "locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 2},
    "loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 4}}],
}
CALLER_ZONES = ("a", "a", "b", "b")


def _zoned_fleet(servers: Sequence[EchoServer]) -> dict[str, str]:
    """Zone a for the lower half of the addresses, b for the upper (one subnet per zone):
    consecutive slices of the address ring would hold one zone each."""
    ordered = sorted(s.address for s in servers)
    return {a: "a" if i < len(ordered) // 2 else "b" for i, a in enumerate(ordered)}


def _zoned_settled(channels: Sequence[Any], zones: dict[str, str]) -> bool:
    addresses = sorted(zones)
    for channel, zone in zip(channels, CALLER_ZONES, strict=True):
        view = channel._balancer.clients
        if view is None or view.count != len(channels) or channel.snapshot is None:
            return False
        if len(channel.snapshot) != len(addresses):
            return False
        place = view.place("zone", zone)
        expected = take(zoned_rings(addresses, Zones("zone", zone, zones), place, 4), ())
        if set(channel.subchannel_states()) != set(expected):
            return False
    return True


def _check_zoned(held: Sequence[set[str]], zones: dict[str, str]) -> None:
    for subset, zone in zip(held, CALLER_ZONES, strict=True):
        assert sorted(zones[a] for a in subset) == ["a", "a", "b", "b"], (zone, subset)
    # 4 channels x 4 over 8 nodes: every node in two subsets
    assert Counter(a for subset in held for a in subset) == dict.fromkeys(zones, 2)


def test_sync_zoned_subsets_hold_local_nodes_and_calls_stay_local(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"s{i}") for i in range(8)]
    zones = _zoned_fleet(servers)
    names = {s.address: s.name for s in servers}
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for address, zone in zones.items():
            registry.register(SERVICE, address=address, metadata={"zone": zone})
        channels = [
            registry.channel(SERVICE, config=ZONED, source={"zone": zone}) for zone in CALLER_ZONES
        ]
        wait_for(lambda: _zoned_settled(channels, zones), 10, "every channel on its subset")
        held = [set(c.subchannel_states()) for c in channels]
        _check_zoned(held, zones)
        for channel, subset, zone in zip(channels, held, CALLER_ZONES, strict=True):
            local = {names[a] for a in subset if zones[a] == zone}
            wait_for(lambda c=channel, mine=local: _who(c) == mine, 10, "calls on the local nodes")


async def test_aio_zoned_subsets_hold_local_nodes_and_calls_stay_local(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = [start_server(f"s{i}") for i in range(8)]
    zones = _zoned_fleet(servers)
    names = {s.address: s.name for s in servers}
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        for address, zone in zones.items():
            await registry.register(SERVICE, address=address, metadata={"zone": zone})
        channels = [
            registry.channel(SERVICE, config=ZONED, source={"zone": zone}) for zone in CALLER_ZONES
        ]

        async def settled() -> bool:
            return _zoned_settled(channels, zones)

        await async_wait_for(settled, 10, "every channel on its subset")
        held = [set(c.subchannel_states()) for c in channels]
        _check_zoned(held, zones)
        for channel, subset, zone in zip(channels, held, CALLER_ZONES, strict=True):
            local = {names[a] for a in subset if zones[a] == zone}
            api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]

            async def on_local(api: Any = api, local: set[str] = local) -> bool:
                return {
                    who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(30)
                } == local

            await async_wait_for(on_local, 10, "calls on the local nodes")


# ---------------------------------------------------------------- past unreachable members

#: Reconnect fast, so a restored node is READY again within a fraction of a second.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 200),
]
#: How long a node must be READY again before its replacement goes (the default is 30 s).
HOLD = 0.5


class _Partition:
    """Five servers, each registered at a TcpProxy of its own that can be cut: etcd keeps
    their keys while this client cannot reach them (a one-sided partition)."""

    def __init__(self, start_server: Callable[..., EchoServer]) -> None:
        servers = [start_server(f"s{i}") for i in range(5)]
        proxies = [TcpProxy(s.address) for s in servers]
        self.proxies = {p.endpoint: p for p in proxies}
        self.names = {p.endpoint: s.name for p, s in zip(proxies, servers, strict=True)}
        #: A lone channel's ring with subsetSize 2: the sorted addresses from the first.
        self.ring = sorted(self.proxies)

    def cut(self, *indexes: int) -> None:
        for i in indexes:
            self.proxies[self.ring[i]].cut()

    def restore(self) -> None:
        for proxy in self.proxies.values():
            proxy.restore()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()

    def held(self, channel: Any) -> list[str]:
        return sorted(self.names[a] for a in channel.subchannel_states())

    def ring_names(self, *indexes: int) -> list[str]:
        return sorted(self.names[self.ring[i]] for i in indexes)


def test_sync_a_subset_reaches_past_unreachable_members_and_comes_back(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    fleet = _Partition(start_server)
    try:
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            for address in fleet.ring:
                registry.register(SERVICE, address=address)
            channel = registry.channel(SERVICE, config=DETERMINISTIC, options=FAST_RECONNECT)
            channel._balancer.unreachable.hold = HOLD
            first = fleet.ring_names(0, 1)
            wait_for(
                lambda: fleet.held(channel) == first and len(_who(channel)) == 2, 10, "2 nodes"
            )
            fleet.cut(0, 1, 2)
            # s0, s1 down: the next two join; s2 down too: no more (subsetSize 2 more at most)
            wait_for(lambda: fleet.held(channel) == fleet.ring_names(0, 1, 2, 3), 10, "widened")
            wait_for(lambda: _who(channel) == set(fleet.ring_names(3)), 10, "calls on the 4th")
            fleet.restore()
            wait_for(lambda: fleet.held(channel) == first, 10, "back to the first two")
            assert _who(channel) == set(first)
            channel.close()
    finally:
        fleet.close()


async def test_aio_a_subset_reaches_past_unreachable_members_and_comes_back(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    fleet = _Partition(start_server)
    try:
        async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
            for address in fleet.ring:
                await registry.register(SERVICE, address=address)
            channel = registry.channel(SERVICE, config=DETERMINISTIC, options=FAST_RECONNECT)
            channel._balancer.unreachable.hold = HOLD
            api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            first = fleet.ring_names(0, 1)

            async def answers() -> set[str]:
                return {who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(30)}

            async def holds(names: list[str]) -> bool:
                return fleet.held(channel) == names

            async def started() -> bool:
                return await holds(first) and len(await answers()) == 2

            async def on_the_4th() -> bool:
                return await answers() == set(fleet.ring_names(3))

            await async_wait_for(started, 10, "2 nodes")
            fleet.cut(0, 1, 2)
            await async_wait_for(lambda: holds(fleet.ring_names(0, 1, 2, 3)), 10, "widened")
            await async_wait_for(on_the_4th, 10, "calls on the 4th")
            fleet.restore()
            await async_wait_for(lambda: holds(first), 10, "back to the first two")
            assert await answers() == set(first)
            await channel.close()
    finally:
        fleet.close()
