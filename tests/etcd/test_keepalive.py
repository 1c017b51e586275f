"""Lease keep-alive over one shared stream: alive, restart with/without data, revoke, stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from etcd_client_helpers import eventually

from grpc_etcd.registry.etcd import AsyncEtcdClient, EtcdClient
from grpc_etcd.testing import EtcdServer


@pytest.mark.slow
async def test_keep_alive_keeps_2s_lease_for_5s_async_and_sync(etcd: EtcdServer) -> None:
    """Both twins at once (the sync client runs on its own loop thread meanwhile)."""
    lost: list[int] = []
    sync_lost = threading.Event()
    sync_client = EtcdClient(etcd.endpoint)
    async with AsyncEtcdClient(etcd.endpoint) as c:
        lease = await c.lease_grant(2)
        await c.put("alive", "v", lease=lease)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        assert ka.lease_id == lease and ka.ttl == 2 and ka.active
        sync_lease = await asyncio.to_thread(sync_client.lease_grant, 2)
        await asyncio.to_thread(sync_client.put, "sync-alive", "v", lease=sync_lease)
        sync_ka = sync_client.keep_alive(sync_lease, 2, on_lost=lambda _id: sync_lost.set())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # check all along, not just at the end
            assert await c.get("alive") is not None
            assert await c.get("sync-alive") is not None
            assert await c.lease_time_to_live(lease) >= 1
            await asyncio.sleep(0.25)
        assert not ka.lost and lost == []
        assert not sync_ka.lost and not sync_lost.is_set() and sync_ka.wait_lost(0.01) is False
        await ka.stop()
        await asyncio.to_thread(sync_ka.stop)
        assert not ka.active and not sync_ka.active

        async def expired() -> bool:
            return await c.get("alive") is None and await c.get("sync-alive") is None

        await eventually(expired, within=4)
        assert lost == [] and not sync_lost.is_set()  # stopping is not losing
    await asyncio.to_thread(sync_client.close)


async def test_many_leases_share_one_stream(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        leases = [await c.lease_grant(1) for _ in range(5)]
        handles = [c.keep_alive(lease, lease.ttl) for lease in leases]
        assert sorted(c._keepaliver.lease_ids) == sorted(leases)
        await asyncio.sleep(1.3)  # past the TTL
        for lease in leases:
            assert await c.lease_time_to_live(lease) >= 0
        assert not any(h.lost for h in handles)
        # stopping one keeps the others going
        await handles[0].stop()
        await asyncio.sleep(1.3)
        assert await c.lease_time_to_live(leases[0]) == -1
        assert await c.lease_time_to_live(leases[1]) >= 0


async def test_revoked_lease_is_reported_lost_once(etcd: EtcdServer) -> None:
    lost: list[int] = []
    async with AsyncEtcdClient(etcd.endpoint) as c:
        lease = await c.lease_grant(2)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        other = await c.lease_grant(2)
        ka_other = c.keep_alive(other, other.ttl)
        etcd.etcdctl("lease", "revoke", f"{lease:x}")
        assert await ka.wait_lost(timeout=2)
        await asyncio.sleep(1)  # more keep-alive rounds: still reported once
        assert lost == [lease]
        assert not ka_other.lost
        assert c._keepaliver.lease_ids == [other]


async def test_unknown_lease_is_lost_at_once(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        ka = c.keep_alive(0x1234, 10)
        assert await ka.wait_lost(timeout=2)


async def test_restart_keeping_data_lease_survives(etcd: EtcdServer) -> None:
    lost: list[int] = []
    async with AsyncEtcdClient(etcd.endpoint) as c:
        # a TTL above a restart's duration on a loaded machine (2 s was sometimes less)
        lease = await c.lease_grant(4)
        await c.put("alive", "v", lease=lease)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(etcd.restart)
        await asyncio.sleep(4.5)  # > TTL after the restart: kept alive only if the stream is back
        assert not ka.lost and lost == []
        assert await c.lease_time_to_live(lease) >= 1
        assert await c.get("alive") is not None


async def test_restart_wiped_reports_lost_fast(etcd: EtcdServer) -> None:
    lost_at: list[float] = []
    async with AsyncEtcdClient(etcd.endpoint) as c:
        lease = await c.lease_grant(3)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lambda _id: lost_at.append(time.monotonic()))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(etcd.restart, wipe=True)
        restarted = time.monotonic()
        assert await ka.wait_lost(timeout=lease.ttl / 3 + 2)
        assert len(lost_at) == 1 and lost_at[0] - restarted <= lease.ttl / 3 + 2


async def test_etcd_down_longer_than_ttl_reports_lost(etcd: EtcdServer) -> None:
    lost: list[int] = []
    async with AsyncEtcdClient(etcd.endpoint, timeout=1) as c:
        lease = await c.lease_grant(1)
        ka = c.keep_alive(lease, lease.ttl, on_lost=lost.append)
        await asyncio.sleep(0.2)
        etcd.stop()
        stopped = time.monotonic()
        assert await ka.wait_lost(timeout=3)
        assert time.monotonic() - stopped <= 1.5
        assert lost == [lease]


async def test_close_stops_keep_alive_without_revoking(etcd: EtcdServer) -> None:
    lost: list[int] = []
    c = AsyncEtcdClient(etcd.endpoint)
    lease = await c.lease_grant(5)
    c.keep_alive(lease, lease.ttl, on_lost=lost.append)
    await asyncio.sleep(0.1)
    await c.close()
    assert lost == []
    async with AsyncEtcdClient(etcd.endpoint) as c2:
        assert await c2.lease_time_to_live(lease) > 0  # not revoked


def test_sync_on_lost_runs_on_loop_thread(etcd: EtcdServer) -> None:
    where: list[str] = []
    done = threading.Event()
    with EtcdClient(etcd.endpoint) as c:
        lease = c.lease_grant(1)

        def on_lost(lease_id: int) -> None:
            where.append(threading.current_thread().name)
            done.set()

        ka = c.keep_alive(lease, lease.ttl, on_lost=on_lost)
        c.lease_revoke(lease)
        assert ka.wait_lost(3)
        assert done.wait(1)
        assert where == [c.loop.thread.name]
