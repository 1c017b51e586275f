"""Failover between endpoints, the retry rules, and a cluster losing its leader."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest
from etcd_client_helpers import dead_endpoint, eventually

from grpc_etcd.registry.etcd import (
    AsyncEtcdClient,
    EtcdClient,
    EtcdError,
    EtcdUnavailableError,
    WatchResponse,
)
from grpc_etcd.testing import EtcdCluster, EtcdServer


async def test_dead_endpoint_then_live(etcd: EtcdServer) -> None:
    dead = dead_endpoint()
    async with AsyncEtcdClient([dead, etcd.endpoint], timeout=3) as c:
        t0 = time.monotonic()
        await c.put("k", "v")
        assert time.monotonic() - t0 < 1  # refused at once, no waiting on the dead one
        kv = await c.get("k")
        assert kv is not None and kv.value == b"v"
        assert c.current_endpoint == etcd.endpoint
        lease = await c.lease_grant(5)
        assert await c.lease_time_to_live(lease) > 0
        ka = c.keep_alive(lease, lease.ttl)
        await asyncio.sleep(0.3)
        assert not ka.lost
        assert (await c.status()).endpoint == etcd.endpoint


def test_sync_dead_endpoint_then_live(etcd: EtcdServer) -> None:
    # comma-separated string with scheme prefixes is accepted too
    with EtcdClient(f"http://{dead_endpoint()},http://{etcd.endpoint}/", timeout=3) as c:
        assert c.endpoints[1] == etcd.endpoint
        c.put("k", "v")
        kv = c.get("k")
        assert kv is not None and kv.value == b"v"


async def test_all_endpoints_down_raises_unavailable_naming_them() -> None:
    dead = [dead_endpoint(), dead_endpoint()]
    async with AsyncEtcdClient(dead, timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailableError) as info:
            await c.get("k")
        assert 0.4 < time.monotonic() - t0 < 2
        assert info.value.endpoints == tuple(dead)
        for ep in dead:
            assert ep in str(info.value)
        with pytest.raises(EtcdUnavailableError):
            await c.put("k", "v")  # writes fail the same way (and were never sent)


def test_sync_all_endpoints_down() -> None:
    with EtcdClient(dead_endpoint(), timeout=0.3) as c, pytest.raises(EtcdUnavailableError):
        c.get("k")


async def test_per_call_timeout_overrides_client_timeout() -> None:
    async with AsyncEtcdClient(dead_endpoint(), timeout=30) as c:
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailableError):
            await c.get("k", timeout=0.3)
        assert time.monotonic() - t0 < 2


async def test_etcd_back_within_timeout_is_waited_for(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint, timeout=5) as c:
        await c.put("k", "v")
        etcd.stop()
        task = asyncio.ensure_future(c.get("k"))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(etcd.start)
        kv = await task
        assert kv is not None and kv.value == b"v"


# --------------------------------------------------------------------- the retry rules


_FAKE_METHODS = {
    "etcdserverpb.KV": ["Range", "Put", "DeleteRange", "Txn", "Compact"],
    "etcdserverpb.Lease": ["LeaseGrant", "LeaseRevoke", "LeaseTimeToLive"],
    "etcdserverpb.Maintenance": ["Status"],
    "etcdserverpb.Auth": ["Authenticate"],
}


class FakeEtcd:
    """A gRPC server answering etcd's unary methods with one fixed error, counting calls."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        self.calls: list[str] = []
        self.server = grpc.aio.server()
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        m: grpc.unary_unary_rpc_method_handler(self._fail(f"/{service}/{m}"))
                        for m in methods
                    },
                )
                for service, methods in _FAKE_METHODS.items()
            )
        )

    def _fail(
        self, method: str
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        async def fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls.append(method)
            await context.abort(self.code, self.details)
            raise AssertionError("unreachable")

        return fail

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def fake_etcd(code: grpc.StatusCode, details: str) -> AsyncIterator[FakeEtcd]:
    fake = FakeEtcd(code, details)
    await fake.server.start()
    try:
        yield fake
    finally:
        await fake.server.stop(None)


async def test_reads_are_retried_elsewhere_after_unavailable(etcd: EtcdServer) -> None:
    async with (
        fake_etcd(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out") as fake,
        AsyncEtcdClient([fake.endpoint, etcd.endpoint]) as c,
    ):
        assert await c.get("k") is None
        assert fake.calls == ["/etcdserverpb.KV/Range"]
        assert c.current_endpoint == etcd.endpoint


async def test_writes_are_not_retried_after_being_sent(etcd: EtcdServer) -> None:
    async with (
        fake_etcd(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out") as fake,
        AsyncEtcdClient([fake.endpoint, etcd.endpoint]) as c,
    ):
        with pytest.raises(EtcdUnavailableError, match="may or may not have been applied") as info:
            await c.put("k", "v")
        assert info.value.endpoints == (fake.endpoint,)
        with pytest.raises(EtcdUnavailableError):
            await c.delete("k")
        assert fake.calls == ["/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange"]
        assert await c.get("k") is None  # the real etcd never saw the put


async def test_writes_are_retried_when_refused_for_no_leader(etcd: EtcdServer) -> None:
    async with (
        fake_etcd(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader") as fake,
        AsyncEtcdClient([fake.endpoint, etcd.endpoint]) as c,
    ):
        await c.put("k", "v")
        assert fake.calls == ["/etcdserverpb.KV/Put"]
        kv = await c.get("k")
        assert kv is not None and kv.value == b"v"


async def test_other_errors_are_raised_as_etcd_error() -> None:
    async with (
        fake_etcd(grpc.StatusCode.INTERNAL, "something broke") as fake,
        AsyncEtcdClient([fake.endpoint, dead_endpoint()]) as c,
    ):
        with pytest.raises(EtcdError) as info:
            await c.get("k")
        assert not isinstance(info.value, EtcdUnavailableError)
        assert info.value.code == "INTERNAL" and fake.endpoint in str(info.value)
        assert not isinstance(info.value, grpc.RpcError)


# --------------------------------------------------------------------- a real cluster


@pytest.mark.slow
async def test_cluster_survives_leader_stop(etcd_cluster: EtcdCluster) -> None:
    leader = etcd_cluster.leader()
    endpoints = etcd_cluster.endpoints
    ordered = [endpoints[leader]] + [e for i, e in enumerate(endpoints) if i != leader]
    lost: list[int] = []
    async with AsyncEtcdClient(ordered, timeout=10) as c:
        assert (await c.status()).is_leader  # talking to the leader
        lease = await c.lease_grant(1)
        await c.put("/c/alive", "v", lease=lease)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        _, rev = await c.get_prefix("/c/")
        w = c.watch("/c/", prefix=True, start_revision=rev + 1)
        before = await c.put("/c/before", "1")
        async with asyncio.timeout(5):
            first: WatchResponse = await anext(w)
        assert first.events[0].kv.mod_revision == before

        await asyncio.to_thread(etcd_cluster.stop, leader)

        after = await c.put("/c/after", "2")  # fails over, no error
        assert c.current_endpoint != endpoints[leader]
        kv = await c.get("/c/after")
        assert kv is not None and kv.mod_revision == after
        async with asyncio.timeout(5):
            resp = await anext(w)
        assert [e.kv.key for e in resp.events] == [b"/c/after"]
        await asyncio.sleep(2)  # twice the TTL
        assert not ka.lost and lost == []
        assert await c.lease_time_to_live(lease) >= 0
        assert await c.get("/c/alive") is not None

        st = await c.status()
        assert st.leader != 0 and st.endpoint != endpoints[leader]
        await w.aclose()


@pytest.mark.slow
def test_sync_cluster_survives_leader_stop(etcd_cluster: EtcdCluster) -> None:
    leader = etcd_cluster.leader()
    endpoints = etcd_cluster.endpoints
    ordered = [endpoints[leader]] + [e for i, e in enumerate(endpoints) if i != leader]
    with EtcdClient(ordered, timeout=10) as c:
        c.put("k", "1")
        etcd_cluster.stop(leader)
        c.put("k", "2")
        kv = c.get("k")
        assert kv is not None and kv.value == b"2"


async def test_watch_resumes_on_another_member(etcd_cluster: EtcdCluster) -> None:
    async with (
        AsyncEtcdClient(etcd_cluster.endpoints) as c,
        AsyncEtcdClient(etcd_cluster.endpoints[1:]) as writer,
    ):
        rev = await c.put("/m/0", "x")
        w = c.watch("/m/", prefix=True, start_revision=rev)
        async with asyncio.timeout(5):
            await anext(w)
        assert c.current_endpoint == etcd_cluster.endpoints[0]
        await asyncio.to_thread(etcd_cluster.stop, 0)  # the member the watch is on
        revs = [await writer.put(f"/m/{i}", "y") for i in range(1, 4)]
        seen: list[int] = []

        async def got_all() -> bool:
            async with asyncio.timeout(5):
                resp = await anext(w)
            seen.extend(e.kv.mod_revision for e in resp.events)
            return len(seen) >= 3

        await eventually(got_all, within=10)
        assert seen == revs
        await w.aclose()
