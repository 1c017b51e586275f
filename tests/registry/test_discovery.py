"""Discovery against a real etcd: nodes(), watch() snapshots, compaction, outages, bad records."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator

import pytest
from waiting import wait_for

import grpc_etcd
from grpc_etcd import Snapshot
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdCluster, EtcdServer, TcpProxy

SERVICE = "hwholiday.srv.app"
PREFIX = "/hwholiday/srv/app/"


def record(version: str, port: int) -> str:
    return json.dumps({"node": {"version": version, "address": f"127.0.0.1:{port}"}})


@contextlib.contextmanager
def watching(registry: grpc_etcd.Registry, service: str = SERVICE) -> Iterator[Iterator[Snapshot]]:
    snapshots = registry.watch(service)
    try:
        yield snapshots
    finally:
        snapshots.close()  # type: ignore[attr-defined]


def test_first_snapshot_then_one_per_change(etcd: EtcdServer) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry, watching(registry) as snapshots:
        first = next(snapshots)
        assert len(first) == 0 and first.revision > 0
        reg = registry.register(SERVICE, address="127.0.0.1:5001", version="v1")
        added = next(snapshots)
        assert [n.key for n in added.added] == [reg.key]
        reg.update(version="v2")
        updated = next(snapshots)
        assert [n.version for n in updated.updated] == ["v2"]
        reg.close()
        removed = next(snapshots)
        assert [n.key for n in removed.removed] == [reg.key] and len(removed) == 0
        assert first.revision < added.revision < updated.revision < removed.revision


def test_changes_between_read_and_watch_are_not_lost(etcd: EtcdServer) -> None:
    """The watch starts at the read's revision + 1; a write right after the read still shows."""
    etcd.etcdctl("put", PREFIX + "a", record("v1", 1))
    with grpc_etcd.Registry(etcd.endpoint) as registry, watching(registry) as snapshots:
        first = next(snapshots)
        etcd.etcdctl("put", PREFIX + "b", record("v1", 2))
        assert [n.id for n in next(snapshots).added] == ["b"]
        assert [n.id for n in first] == ["a"]


def test_watcher_behind_compaction_resynchronises_without_losing_a_node(etcd: EtcdServer) -> None:
    for i in range(3):
        etcd.etcdctl("put", PREFIX + f"keep-{i}", record("v1", 100 + i))
    with (
        TcpProxy(etcd.endpoint) as proxy,
        grpc_etcd.Registry(proxy.endpoint, timeout=2) as registry,
        watching(registry) as snapshots,
    ):
        first = next(snapshots)
        assert len(first) == 3
        proxy.cut()
        # While the watcher is cut off: one node goes, one comes, and history is compacted.
        etcd.etcdctl("del", PREFIX + "keep-0")
        etcd.etcdctl("put", PREFIX + "new", record("v2", 200))
        for i in range(20):
            etcd.etcdctl("put", "/other/noise", str(i))
        revision = json.loads(etcd.etcdctl("get", "/other/noise", "-w", "json"))["header"][
            "revision"
        ]
        etcd.etcdctl("compact", str(revision))
        proxy.restore()
        nxt = next(snapshots)
        assert sorted(n.id for n in nxt) == ["keep-1", "keep-2", "new"]
        assert [n.id for n in nxt.removed] == ["keep-0"]
        assert [n.id for n in nxt.added] == ["new"]
        assert nxt.revision >= revision


def test_outage_keeps_the_last_nodes(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", PREFIX + "a", record("v1", 1))
    with (
        TcpProxy(etcd.endpoint) as proxy,
        grpc_etcd.Registry(proxy.endpoint, timeout=1) as registry,
        watching(registry) as snapshots,
    ):
        assert len(next(snapshots)) == 1
        proxy.cut()
        etcd.etcdctl("put", PREFIX + "b", record("v1", 2))
        proxy.restore()
        nxt = next(snapshots)
        assert sorted(n.id for n in nxt) == ["a", "b"]
        assert nxt.removed == ()


def test_malformed_records_are_skipped_with_one_warning_each(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    with EtcdClient(etcd.endpoint) as client:
        for i in range(500):
            client.put(PREFIX + f"bad-{i:03}", "{not json" if i % 2 else '{"metadata":null}')
        for i in range(50):
            client.put(PREFIX + f"good-{i:02}", record("v1", 1000 + i))
    caplog.set_level(logging.WARNING, logger="grpc_etcd")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        assert sorted(n.id for n in registry.nodes(SERVICE)) == [f"good-{i:02}" for i in range(50)]
        with watching(registry) as snapshots:
            first = next(snapshots)
            assert len(first) == 50
            etcd.etcdctl("put", PREFIX + "bad-000", "still bad")
            etcd.etcdctl("put", PREFIX + "good-new", record("v2", 2000))
            nxt = next(snapshots)
            assert [n.id for n in nxt.added] == ["good-new"] and len(nxt) == 51
    warned = [r.getMessage() for r in caplog.records if "bad-" in r.getMessage()]
    # nodes() warns for each of the 500, the watcher once per key (not again for bad-000).
    assert len(warned) == 1000
    assert any(PREFIX + "bad-499" in m for m in warned)


def test_cluster_leader_stopped_registration_and_watch_carry_on(etcd_cluster: EtcdCluster) -> None:
    endpoints = ",".join(etcd_cluster.endpoints)
    with grpc_etcd.Registry(endpoints, timeout=2) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5001", version="v1", ttl=3)
        snapshots = registry.watch(SERVICE)
        assert [n.key for n in next(snapshots)] == [reg.key]
        leader = etcd_cluster.leader()
        etcd_cluster.stop(leader)
        survivor = next(i for i in range(3) if i != leader)
        etcd_cluster.members[survivor].etcdctl("put", PREFIX + "after", record("v2", 6000))
        nxt = next(snapshots)
        assert [n.id for n in nxt.added] == ["after"] and reg.key in nxt.nodes
        old_lease = reg.lease_id
        member = etcd_cluster.members[survivor]
        # Sample across two full TTLs: keep-alive must have moved to a live member.
        end = time.monotonic() + 2 * reg.ttl
        while time.monotonic() < end:
            ttl = json.loads(member.etcdctl("lease", "timetolive", f"{old_lease:x}", "-w", "json"))
            assert ttl["ttl"] > 0, "the lease expired after the leader stopped"
            time.sleep(0.3)
        assert reg.lease_id == old_lease
        assert reg.state is grpc_etcd.RegistrationState.REGISTERED
        snapshots.close()  # type: ignore[attr-defined]


def test_a_write_right_after_the_first_snapshot_comes_once(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", f"{PREFIX}a", record("v1", 5001))
    with grpc_etcd.Registry(etcd.endpoint) as registry, watching(registry) as snapshots:
        first = next(snapshots)
        assert [n.id for n in first] == ["a"]
        with EtcdClient(etcd.endpoint) as client:
            client.put(f"{PREFIX}b", record("v1", 5002))
            client.put(f"{PREFIX}a", record("v2", 5001))
        second = next(snapshots)
        if not second.updated:  # the two writes may come in one batch or in two
            assert [n.id for n in second.added] == ["b"]
            second = next(snapshots)
        assert [n.version for n in second.updated] == ["v2"]
        assert sorted(n.id for n in second) == ["a", "b"]


def test_allow_list_ignores_records_outside_with_one_warning(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    etcd.etcdctl("put", f"{PREFIX}inside", record("v1", 5001).replace("127.0.0.1", "127.0.0.2"))
    etcd.etcdctl("put", f"{PREFIX}outside", record("v1", 5002).replace("127.0.0.1", "127.0.0.3"))
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        with pytest.raises(ValueError, match="not a network"):
            registry.channel(SERVICE, allow=["127.0.0.2/33"])
        with (
            caplog.at_level(logging.WARNING, "grpc_etcd.watcher"),
            registry.channel(SERVICE, allow=["127.0.0.2/32"]) as channel,
        ):
            snap = wait_for(lambda: channel.snapshot, 5, "the first snapshot")
            assert [n.id for n in snap] == ["inside"]
            # rewritten (still outside), then a new node inside: one warning for the key
            etcd.etcdctl(
                "put", f"{PREFIX}outside", record("v2", 5002).replace("127.0.0.1", "127.0.0.3")
            )
            etcd.etcdctl(
                "put", f"{PREFIX}later", record("v1", 5003).replace("127.0.0.1", "127.0.0.2")
            )
            wait_for(
                lambda: channel.snapshot is not None and len(channel.snapshot) == 2,
                5,
                "the node inside the allow-list",
            )
            assert sorted(n.id for n in channel.snapshot) == ["inside", "later"]
        warnings = [r.getMessage() for r in caplog.records if "allow-list" in r.getMessage()]
        assert len(warnings) == 1 and f"{PREFIX}outside" in warnings[0]
