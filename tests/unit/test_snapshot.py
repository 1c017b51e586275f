"""Snapshots: full reads, applied changes, diffs, and bad records that lose nothing."""

from __future__ import annotations

from grpc_etcd.node import Node, encode_record
from grpc_etcd.snapshot import Change, apply_changes, snapshot_from_kvs

SERVICE = "hwholiday.srv.app"
PREFIX = "/hwholiday/srv/app/"


def record(node_id: str, version: str = "v1", port: int = 1000) -> tuple[str, bytes]:
    node = Node(SERVICE, node_id, f"127.0.0.1:{port}", version)
    return PREFIX + node_id, encode_record(node)


def test_full_read_then_changes() -> None:
    snap, errors = snapshot_from_kvs(SERVICE, [record("a"), record("b", "v2")], revision=5)
    assert errors == [] and snap.revision == 5
    assert sorted(n.id for n in snap) == ["a", "b"]
    assert {n.id for n in snap.added} == {"a", "b"}
    assert snap.versions() == {"v1", "v2"}

    key, value = record("a", "v3")
    nxt, _ = apply_changes(snap, [Change("put", key, value), Change("delete", PREFIX + "b")], 7)
    assert nxt.revision == 7
    assert [n.version for n in nxt.updated] == ["v3"]
    assert [n.id for n in nxt.removed] == ["b"]
    assert nxt.added == ()
    assert len(snap) == 2, "the old snapshot is unchanged"


def test_bad_record_is_reported_and_skipped() -> None:
    snap, errors = snapshot_from_kvs(SERVICE, [record("a"), (PREFIX + "bad", b"{")], 3)
    assert [n.id for n in snap] == ["a"]
    assert [e.key for e in errors] == [PREFIX + "bad"]


def test_garbage_over_a_good_record_keeps_the_last_good_node() -> None:
    snap, _ = snapshot_from_kvs(SERVICE, [record("a")], 3)
    nxt, errors = apply_changes(snap, [Change("put", PREFIX + "a", b"garbage")], 4)
    assert [n.id for n in nxt] == ["a"] and not nxt.changed
    assert len(errors) == 1
    resync, errors = snapshot_from_kvs(SERVICE, [(PREFIX + "a", b"garbage")], 5, previous=nxt)
    assert [n.id for n in resync] == ["a"] and len(errors) == 1


def test_resync_diff_against_previous() -> None:
    first, _ = snapshot_from_kvs(SERVICE, [record("a"), record("b")], 3)
    second, _ = snapshot_from_kvs(SERVICE, [record("b"), record("c")], 9, previous=first)
    assert [n.id for n in second.added] == ["c"]
    assert [n.id for n in second.removed] == ["a"]


def test_naming_delete_op_removes() -> None:
    key = "svc/127.0.0.1:1"
    snap, _ = snapshot_from_kvs("svc", [(key, b'{"Op":0,"Addr":"127.0.0.1:1"}')], 1)
    assert len(snap) == 1
    nxt, _ = apply_changes(snap, [Change("put", key, b'{"Op":1,"Addr":"127.0.0.1:1"}')], 2)
    assert len(nxt) == 0 and len(nxt.removed) == 1


def test_changes_in_a_big_service_touch_only_their_keys() -> None:
    snap, _ = snapshot_from_kvs(SERVICE, [record(f"n{i}", port=1000 + i) for i in range(1000)], 3)
    key, value = record("n7", "v2", port=1007)
    nxt, _ = apply_changes(
        snap,
        [Change("put", key, value), Change("delete", PREFIX + "n8"), Change("put", *record("x"))],
        4,
    )
    assert [n.id for n in nxt.updated] == ["n7"]
    assert [n.id for n in nxt.removed] == ["n8"]
    assert [n.id for n in nxt.added] == ["x"]
    assert len(nxt) == 1000
    assert nxt.nodes[PREFIX + "n9"] is snap.nodes[PREFIX + "n9"]  # unchanged nodes are shared


def test_a_put_then_delete_in_one_batch_is_no_change() -> None:
    snap, _ = snapshot_from_kvs(SERVICE, [record("a")], 3)
    nxt, _ = apply_changes(snap, [Change("put", *record("b")), Change("delete", PREFIX + "b")], 4)
    assert not nxt.changed and nxt.nodes is snap.nodes and nxt.revision == 4
