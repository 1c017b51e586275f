"""The asyncio twins: the same behaviour through grpc_etcd.aio.Registry."""

from __future__ import annotations

import asyncio
import json

import pytest
from waiting import async_wait_for

import grpc_etcd
from grpc_etcd import Snapshot
from grpc_etcd.aio import RegistrationState, Registry
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"


async def test_register_watch_update_close(etcd: EtcdServer) -> None:
    async with Registry(etcd.endpoint) as registry:
        snapshots = registry.watch(SERVICE)
        first = await anext(snapshots)
        assert len(first) == 0
        reg = await registry.register(SERVICE, address="127.0.0.1:5001", version="v1", weight=5)
        added = await anext(snapshots)
        assert [(n.key, n.version, n.weight) for n in added.added] == [(reg.key, "v1", 5)]
        await reg.update(version="v2")
        assert [n.version for n in (await anext(snapshots)).updated] == ["v2"]
        assert [n.version for n in await registry.nodes(SERVICE)] == ["v2"]
        await reg.close()
        assert reg.state is RegistrationState.CLOSED
        removed = await anext(snapshots)
        assert [n.key for n in removed.removed] == [reg.key]
        lease = json.loads(etcd.etcdctl("lease", "timetolive", f"{reg.lease_id:x}", "-w", "json"))
        assert lease["ttl"] == -1
        await snapshots.aclose()  # type: ignore[attr-defined]


async def test_key_deleted_by_hand_is_written_again(etcd: EtcdServer) -> None:
    async with Registry(etcd.endpoint) as registry:
        reg = await registry.register(SERVICE, address="127.0.0.1:5001", ttl=3)
        etcd.etcdctl("del", reg.key)

        async def present() -> bool:
            return bool(await registry.nodes(SERVICE))

        await async_wait_for(present, 3 / 3 + 1, "the key to be written again")


async def test_etcd_restarted_empty_gets_the_registration_back(etcd: EtcdServer) -> None:
    async with Registry(etcd.endpoint) as registry:
        reg = await registry.register(SERVICE, address="127.0.0.1:5001", ttl=3)
        old = reg.lease_id
        etcd.restart(wipe=True)

        async def back() -> bool:
            return [n.key for n in await registry.nodes(SERVICE)] == [reg.key]

        await async_wait_for(back, 3 / 3 + 2, "registration after a wiped etcd")
        assert reg.lease_id != old


async def test_bad_argument(etcd: EtcdServer) -> None:
    async with Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="wildcard"):
            await registry.register(SERVICE, address="0.0.0.0:1")


def test_top_level_names() -> None:
    assert grpc_etcd.aio.Registry is Registry
    assert grpc_etcd.Registry is not Registry


async def test_watch_ends_when_the_registry_closes(etcd: EtcdServer) -> None:
    registry = Registry(etcd.endpoint)
    snapshots = registry.watch(SERVICE)
    assert len(await anext(snapshots)) == 0
    await registry.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(snapshots), 5)


async def test_allow_list_in_watch_and_channel(etcd: EtcdServer) -> None:
    async with Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address="127.0.0.2:5001", instance_id="inside")
        await registry.register(SERVICE, address="127.0.0.3:5001", instance_id="outside")
        snapshots = registry.watch(SERVICE, allow=["127.0.0.2/32"])
        async with asyncio.timeout(5):
            assert [n.id for n in await anext(snapshots)] == ["inside"]
        await snapshots.aclose()  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="at least one"):
            registry.channel(SERVICE, allow=[])
        async with registry.channel(SERVICE, allow=["127.0.0.2/32"]) as channel:

            async def snapshot() -> Snapshot | None:
                return channel.snapshot

            snap = await async_wait_for(snapshot, 5, "the first snapshot")
            assert [n.id for n in snap] == ["inside"]
