"""The address allow-list (pure): networks, host names, IPv6, and the snapshot filter."""

from __future__ import annotations

import pytest

from grpc_etcd.allowlist import AllowList, allow_list
from grpc_etcd.node import Node, encode_record
from grpc_etcd.snapshot import Change, apply_changes, snapshot_from_kvs

SERVICE = "hwholiday.srv.app"
PREFIX = "/hwholiday/srv/app/"


def record(node_id: str, address: str) -> tuple[str, bytes]:
    return PREFIX + node_id, encode_record(Node(SERVICE, node_id, address, "v1"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.2:5000", False),
        ("10.1.2.3:80", True),
        ("11.0.0.1:80", False),
        ("[::1]:5000", True),
        ("[::2]:5000", False),
        ("[::ffff:10.0.0.1]:80", True),  # IPv4-mapped: judged as 10.0.0.1
        ("localhost:5000", False),  # a host name is outside every network
        ("db.internal:5000", False),
        ("not an address", False),
    ],
)
def test_allows(address: str, allowed: bool) -> None:
    allow = AllowList(["10.0.0.0/8", "127.0.0.1/32", "::1"])
    assert allow.allows(address) is allowed


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("10.0.0.0/8", "not one string"),
        ([], "at least one"),
        (["10.0.0.0/33"], "'10.0.0.0/33' is not a network"),
        (["10.0.0.1/8"], "has host bits set"),
        (["example.com"], "'example.com' is not a network"),
        ([8], "8 is not a network"),
    ],
)
def test_bad_allow_lists_are_refused(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllowList(bad)  # type: ignore[arg-type]


def test_allow_list_passes_none_and_ready_lists_through() -> None:
    ready = AllowList(["127.0.0.0/8"])
    assert allow_list(None) is None and allow_list(ready) is ready
    assert allow_list(["127.0.0.0/8"]).allows("127.0.0.9:1")  # type: ignore[union-attr]


def test_snapshots_ignore_records_outside_and_keep_the_last_good_node() -> None:
    allow = AllowList(["127.0.0.2/32"])
    snap, errors = snapshot_from_kvs(
        SERVICE, [record("in", "127.0.0.2:1"), record("out", "127.0.0.3:1")], 3, allow=allow
    )
    assert [n.id for n in snap] == ["in"]
    assert [e.key for e in errors] == [PREFIX + "out"] and "allow-list" in str(errors[0])
    # a known node that moves outside keeps its last allowed address, like a bad record
    nxt, errors = apply_changes(snap, [Change("put", *record("in", "127.0.0.3:1"))], 4, allow=allow)
    assert [n.address for n in nxt] == ["127.0.0.2:1"] and not nxt.changed
    assert [e.key for e in errors] == [PREFIX + "in"]
