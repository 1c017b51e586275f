"""Registry + etcd + BalancedChannel + real servers, the way users wire them (sync and aio)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import grpc
import pytest
from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
from grpc_etcd import route
from grpc_etcd.demo import api_pb2_grpc
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"


def stub(channel: object) -> api_pb2_grpc.ApiStub:
    return api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]


def test_versions_route_to_their_registered_servers(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    servers = {name: start_server(name) for name in ("a1", "a2", "b1")}
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for name, server in servers.items():
            version = "v1" if name.startswith("a") else "v2"
            registry.register(SERVICE, address=server.address, version=version)
        channel = registry.channel(SERVICE)
        api = stub(channel)
        with route(version="v1"):
            v1 = Counter(who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(200))
        v2 = {
            who(api.ApiTest(Request(input="x"), timeout=5, metadata=[("x-version", "v2")]))
            for _ in range(20)
        }
        assert set(v1) == {"a1", "a2"} and min(v1.values()) > 50
        assert v2 == {"b1"}
        with route(version="v3"), pytest.raises(grpc.RpcError) as info:
            api.ApiTest(Request(input="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert info.value.details() == "no match found conn"  # type: ignore[attr-defined]


def test_first_call_on_a_fresh_channel_succeeds(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    """The seed failed about half of its first calls while connections came up."""
    v1, v2 = start_server("v1-server"), start_server("v2-server")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address=v1.address, version="v1")
        registry.register(SERVICE, address=v2.address, version="v2")
        for i in range(20):
            version = "v1" if i % 2 == 0 else "v2"
            with registry.channel(SERVICE, version=version) as channel:
                reply = stub(channel).ApiTest(Request(input="first"), timeout=5)
                assert who(reply) == f"{version}-server"


def test_nodes_coming_and_going_are_followed(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    server = start_server("late")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        channel = registry.channel(SERVICE, version="v3")
        api = stub(channel)
        reg = registry.register(SERVICE, address=server.address, version="v3")
        # wait_for_ready: wait for a v3 node to be registered and connected.
        assert who(api.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)) == "late"
        reg.close()
        wait_for(
            lambda: channel.snapshot is not None and len(channel.snapshot) == 0,
            5,
            "the channel to see the node go",
        )
        with pytest.raises(grpc.RpcError) as info:
            api.ApiTest(Request(input="x"), timeout=5)
        assert info.value.details() == "no match found conn"  # type: ignore[attr-defined]


def test_go_original_record_written_by_etcdctl_is_routed(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    server = start_server("go-style")
    record = (
        '{"node":{"name":"app","path":"/hwholiday/srv/app","id":"app-go-1","version":"v1",'
        f'"address":"{server.address}"}},"metadata":null,"endpoints":{{"ApiTest":{{"online":true,'
        '"limiting_switch":false,"limiting":10,"fuse":false,"defaults":null}}}'
    )
    etcd.etcdctl("put", "/hwholiday/srv/app/app-go-1", record)
    with (
        grpc_etcd.Registry(etcd.endpoint) as registry,
        registry.channel(SERVICE) as channel,
        route(version="v1"),
    ):
        assert who(stub(channel).ApiTest(Request(input="x"), timeout=5)) == "go-style"


def test_etcd_target_string(etcd: EtcdServer, start_server: Callable[..., EchoServer]) -> None:
    server = start_server("by-target")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address=server.address, version="v9")
        with grpc_etcd.channel(f"etcd://{etcd.endpoint}/{SERVICE}?policy=version&version=v9") as ch:
            assert who(stub(ch).ApiTest(Request(input="x"), timeout=5)) == "by-target"


def test_closing_the_registry_closes_its_channels(etcd: EtcdServer) -> None:
    registry = grpc_etcd.Registry(etcd.endpoint)
    channel = registry.channel(SERVICE)
    registry.close()
    with pytest.raises(ValueError, match="closed"):
        stub(channel).ApiTest(Request(input="x"), timeout=1)


async def test_aio_registry_channel(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    a, b = start_server("aio-v1"), start_server("aio-v2")
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address=a.address, version="v1")
        channel = registry.channel(SERVICE)
        api = stub(channel)
        with route(version="v1"):
            assert who(await api.ApiTest(Request(input="x"), timeout=5)) == "aio-v1"
        reply = await api.ApiTest(Request(input="x"), timeout=5, metadata=[("x-version", "v1")])
        assert who(reply) == "aio-v1"
        with route(version="v2"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await api.ApiTest(Request(input="x"), timeout=5)
            assert info.value.details() == "no match found conn"
            await registry.register(SERVICE, address=b.address, version="v2")
            reply = await api.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
            assert who(reply) == "aio-v2"

        async def seen_both() -> bool:
            return channel.snapshot is not None and len(channel.snapshot) == 2

        await async_wait_for(seen_both, 5, "both nodes in the channel's snapshot")


async def test_aio_etcd_target_string(
    etcd: EtcdServer, start_server: Callable[..., EchoServer]
) -> None:
    server = start_server("aio-target")
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address=server.address, version="v1")
        channel = grpc_etcd.aio.channel(f"etcd://{etcd.endpoint}/{SERVICE}?version=v1")
        async with channel:
            assert who(await stub(channel).ApiTest(Request(input="x"), timeout=5)) == "aio-target"
