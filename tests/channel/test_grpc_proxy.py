"""A registration and a channel through etcd's own gRPC proxy (``etcd grpc-proxy start``,
which coalesces watches): lease grants and keep-alives, transactions and watches all pass
through it, in both twins."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.clients import clients_prefix
from grpc_etcd.demo import api_pb2_grpc
from grpc_etcd.testing import EtcdGrpcProxy, EtcdServer

SERVICE = "t.srv.proxied"
SUBSETTING = {"loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 2}}]}


@pytest.fixture
def proxy(etcd: EtcdServer) -> Any:
    with EtcdGrpcProxy(etcd.endpoint) as running:
        yield running


def _call(channel: Any) -> str:
    api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
    return who(api.ApiTest(Request(input="x"), timeout=5))


def test_sync_registration_and_channel_through_the_proxy(
    etcd: EtcdServer, proxy: EtcdGrpcProxy, start_server: Callable[..., EchoServer]
) -> None:
    first, second = start_server("p1"), start_server("p2")
    with (
        grpc_etcd.Registry(proxy.endpoint) as proxied,
        grpc_etcd.Registry(etcd.endpoint) as direct,
    ):
        reg = proxied.register(SERVICE, address=first.address, ttl=4)  # lease + txn
        assert direct.client.get(reg.key) is not None, "written in etcd, through the proxy"
        channel = proxied.channel(SERVICE, config=SUBSETTING)  # watches + a client key
        assert _call(channel) == "p1"
        keys, _ = direct.client.get_prefix(clients_prefix(SERVICE))
        assert len(keys) == 1 and keys[0].lease != 0

        # Keep-alives pass: etcd sees the lease's time to live (whole seconds, rounded down)
        # go back up, every TTL/3.
        seen: list[int] = []

        def refreshed() -> bool:
            seen.append(direct.client.lease_time_to_live(reg.lease_id))
            return any(later > earlier for earlier, later in itertools.pairwise(seen))

        wait_for(refreshed, 8, "a keep-alive through the proxy", interval=0.1)

        # A node written straight into etcd reaches the channel through the proxy's watch.
        late = direct.register(SERVICE, address=second.address)
        wait_for(lambda: channel.snapshot is not None and len(channel.snapshot) == 2, 5, "p2")
        reg.close()
        wait_for(lambda: channel.snapshot is not None and len(channel.snapshot) == 1, 5, "p1 gone")
        wait_for(lambda: _call(channel) == "p2", 5, "calls to p2")
        channel.close()
        assert direct.client.get_prefix(clients_prefix(SERVICE))[0] == []
        late.close()


async def test_aio_registration_and_channel_through_the_proxy(
    etcd: EtcdServer, proxy: EtcdGrpcProxy, start_server: Callable[..., EchoServer]
) -> None:
    server = start_server("p1")
    async with grpc_etcd.aio.Registry(proxy.endpoint) as registry:
        reg = await registry.register(SERVICE, address=server.address, ttl=2)
        channel = registry.channel(SERVICE, config=SUBSETTING)
        api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        assert who(await api.ApiTest(Request(input="x"), timeout=5)) == "p1"

        async def key_held() -> bool:
            view = channel._balancer.clients
            return view is not None and view.known and view.count == 1

        await async_wait_for(key_held, 5, "the channel's own client key, read back")
        await reg.update(version="v2")  # a transaction on our lease, through the proxy
        await async_wait_for(
            lambda: _async(channel.snapshot is not None and channel.snapshot.versions() == {"v2"}),
            5,
            "the update through the proxy's watch",
        )


async def _async(value: bool) -> bool:
    return value
