"""KV round trips, leases, status and error mapping against a real etcd (async and sync)."""

from __future__ import annotations

import asyncio

import pytest
from etcd_client_helpers import eventually_sync

from grpc_etcd.registry.etcd import (
    AsyncEtcdClient,
    CompactedError,
    EtcdClient,
    EtcdError,
    KeyValue,
    Lease,
    LeaseNotFoundError,
)
from grpc_etcd.testing import EtcdServer


async def test_async_put_get_prefix_delete(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        assert await c.get("/a/missing") is None
        r1 = await c.put("/a/1", "one")
        r2 = await c.put(b"/a/2", b"two\xff")
        await c.put("/ab", "not under /a/")
        assert r2 > r1 > 0
        kv = await c.get("/a/1")
        assert isinstance(kv, KeyValue)
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
            b"/a/1",
            b"one",
            r1,
            r1,
            1,
            0,
        )
        kvs, rev = await c.get_prefix("/a/")
        assert [k.key for k in kvs] == [b"/a/1", b"/a/2"]
        assert kvs[1].value == b"two\xff"
        assert rev >= r2
        r3 = await c.put("/a/1", "uno")
        kv = await c.get("/a/1")
        assert kv is not None and (kv.value, kv.version, kv.mod_revision) == (b"uno", 2, r3)
        assert await c.delete("/a/1") == 1
        assert await c.delete("/a/1") == 0
        assert await c.get("/a/1") is None
        await c.put("/a/3", "x")
        assert await c.delete_prefix("/a/") == 2
        assert (await c.get_prefix("/a/"))[0] == []
        assert await c.get("/ab") is not None
        # the whole key space
        kvs, _ = await c.get_prefix("")
        assert [k.key for k in kvs] == [b"/ab"]


def test_sync_put_get_prefix_delete(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        assert c.get("k") is None
        rev = c.put("k", "v")
        kv = c.get("k")
        assert kv is not None and kv.value == b"v" and kv.mod_revision == rev
        c.put("p/1", "1")
        c.put("p/2", "2")
        kvs, read_rev = c.get_prefix("p/")
        assert [k.value for k in kvs] == [b"1", b"2"] and read_rev >= rev
        assert c.delete_prefix("p/") == 2
        assert c.delete("k") == 1
        assert c.get("k") is None
        assert etcd.etcdctl("get", "k") == ""


async def test_put_if_absent(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        assert await c.put_if_absent("once", "a") is True
        assert await c.put_if_absent("once", "b") is False
        kv = await c.get("once")
        assert kv is not None and kv.value == b"a"


async def test_async_lease_grant_put_revoke(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        lease = await c.lease_grant(10)
        assert isinstance(lease, Lease) and isinstance(lease, int)
        assert lease.ttl == 10 and lease.id == int(lease) > 0
        await c.put("leased", "v", lease=lease)
        kv = await c.get("leased")
        assert kv is not None and kv.lease == lease
        assert 8 <= await c.lease_time_to_live(lease) <= 10
        await c.lease_revoke(lease)
        assert await c.get("leased") is None
        assert await c.lease_time_to_live(lease) == -1
        with pytest.raises(LeaseNotFoundError) as info:
            await c.lease_revoke(lease)
        assert info.value.lease_id == lease
        assert etcd.endpoint in str(info.value)
        with pytest.raises(LeaseNotFoundError):
            await c.put("k", "v", lease=12345)


def test_sync_lease_grant_put_revoke(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        lease = c.lease_grant(10)
        c.put("leased", "v", lease=lease)
        assert c.lease_time_to_live(lease) > 0
        c.lease_revoke(lease)
        assert c.get("leased") is None
        with pytest.raises(LeaseNotFoundError):
            c.lease_revoke(lease)


async def test_status_and_compact_errors(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        for i in range(3):
            rev = await c.put("k", str(i))
        st = await c.status()
        assert st.is_leader and st.member_id == st.leader != 0
        assert st.revision == rev and st.endpoint == etcd.endpoint and st.version
        await c.compact(rev)
        with pytest.raises(CompactedError):
            await c.compact(rev - 1)
        with pytest.raises(EtcdError, match="future revision"):
            await c.compact(rev + 100)


async def test_closed_client_raises(etcd: EtcdServer) -> None:
    c = AsyncEtcdClient(etcd.endpoint)
    await c.put("k", "v")
    await c.close()
    await c.close()
    with pytest.raises(EtcdError, match="closed"):
        await c.get("k")


async def test_close_during_request_raises_etcd_error(etcd: EtcdServer) -> None:
    c = AsyncEtcdClient(etcd.endpoint)
    await c.put("k", "v")
    # a request blocked on a stopped etcd, interrupted by close()
    etcd.stop()
    task = asyncio.ensure_future(c.get("k", timeout=10))
    await asyncio.sleep(0.2)
    await c.close()
    with pytest.raises(EtcdError):
        await task


def test_sync_client_shares_a_loop_thread(etcd: EtcdServer) -> None:
    from grpc_etcd._loop import LoopThread

    with LoopThread() as lt:
        a = EtcdClient(etcd.endpoint, loop=lt)
        b = EtcdClient(etcd.endpoint, loop=lt)
        a.put("k", "v")
        kv = b.get("k")
        assert kv is not None and kv.value == b"v"
        a.close()
        assert not lt.closed  # not ours to close
        eventually_sync(lambda: b.get("k") is not None)
        b.close()


async def test_get_at_a_revision_and_after_compaction(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        first = await c.put("/h/k", "one")
        second = await c.put("/h/k", "two")
        await c.delete("/h/k")
        assert await c.get("/h/k") is None
        old = await c.get("/h/k", revision=first)
        assert old is not None and old.value == b"one" and old.mod_revision == first
        kv = await c.get("/h/k", revision=second)
        assert kv is not None and (kv.value, kv.create_revision, kv.version) == (b"two", first, 2)
        assert await c.get("/h/k", revision=first - 1) is None
        with pytest.raises(EtcdError, match="future revision"):
            await c.get("/h/k", revision=second + 100)
        await c.compact(second)
        with pytest.raises(CompactedError):
            await c.get("/h/k", revision=first)
        with pytest.raises(ValueError, match="revision"):
            await c.get("/h/k", revision=-1)


def test_sync_get_at_a_revision(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        first = c.put("/h/k", "one")
        c.put("/h/k", "two")
        kv = c.get("/h/k", revision=first)
        assert kv is not None and kv.value == b"one"


async def test_put_if_unchanged_loses_no_write_made_meanwhile(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        first = await c.put_if_unchanged("/cas/k", "one", mod_revision=0)  # absent: written
        assert first > 0
        assert await c.put_if_unchanged("/cas/k", "again", mod_revision=0) == 0
        second = await c.put("/cas/k", "someone else's")
        assert await c.put_if_unchanged("/cas/k", "mine", mod_revision=first) == 0
        kv = await c.get("/cas/k")
        assert kv is not None and kv.value == b"someone else's"
        third = await c.put_if_unchanged("/cas/k", "mine", mod_revision=second)
        assert third > second


def test_sync_put_if_unchanged(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        written = c.put_if_unchanged("/cas/k", "one", mod_revision=0)
        assert written > 0 and c.put_if_unchanged("/cas/k", "two", mod_revision=0) == 0
