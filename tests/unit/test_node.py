"""node.py: every check of a node, in one place for register() and update() alike, and the
address parser (pure, no etcd)."""

from __future__ import annotations

from typing import Any

import pytest

import grpc_etcd.node as node_checks
from grpc_etcd.node import (
    MAX_LEASE_TTL,
    MethodInfo,
    build_node,
    check_metadata,
    check_ttl,
    encode_record,
    parse_address,
    updated_node,
)

SERVICE = "hwholiday.srv.app"


def _build(**overrides: Any) -> Any:
    args: dict[str, Any] = {
        "address": "127.0.0.1:5000",
        "version": "v1",
        "metadata": None,
        "weight": None,
        "methods": None,
        "advertise": None,
        "instance_id": "a",
        "root": "",
    }
    args.update(overrides)
    return build_node(SERVICE, **args)


def test_weight_goes_into_the_metadata_as_a_string() -> None:
    node = _build(metadata={"zone": "a"}, weight=30)
    assert dict(node.metadata) == {"zone": "a", "weight": "30"} and node.weight == 30
    assert b'"metadata":{"weight":"30","zone":"a"}' in encode_record(node)


@pytest.mark.parametrize(
    ("metadata", "weight", "message"),
    [
        ({"z": 1}, None, "str to str"),
        ({1: "z"}, None, "str to str"),
        ({"weight": "heavy"}, None, "non-negative integer"),
        ({"weight": "-3"}, None, "non-negative integer"),
        ({"weight": "5"}, 6, "disagrees with weight=6"),
        (None, -1, "weight"),
        (None, True, "weight"),
        ("zone=a", None, "mapping"),
    ],
)
def test_bad_metadata_is_refused(metadata: Any, weight: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_metadata(metadata, weight)
    with pytest.raises(ValueError, match=message):
        _build(metadata=metadata, weight=weight)


def test_an_agreeing_weight_in_the_metadata_is_fine() -> None:
    assert check_metadata({"weight": "5"}, 5) == {"weight": "5"}


def test_update_checks_as_register_does() -> None:
    node = _build(metadata={"zone": "a"}, weight=3)
    for bad in ({"metadata": {"z": 1}}, {"version": "v 2"}, {"weight": -1}):
        with pytest.raises(ValueError):
            updated_node(node, **bad)
    with pytest.raises(ValueError, match="disagrees"):
        updated_node(node, metadata={"weight": "1"}, weight=2)


def test_update_keeps_what_is_not_given() -> None:
    node = _build(metadata={"zone": "a"}, weight=3, methods={"M": MethodInfo(fuse=True)})
    new = updated_node(node, weight=4)
    assert dict(new.metadata) == {"zone": "a", "weight": "4"}
    assert (new.version, new.methods, new.key, new.address) == (
        "v1",
        node.methods,
        node.key,
        node.address,
    )
    assert dict(updated_node(node, metadata={"zone": "b"}).metadata) == {"zone": "b"}


@pytest.mark.parametrize("ttl", [1, 0, MAX_LEASE_TTL + 1, 2.5, True])
def test_ttl_outside_what_etcd_grants_is_refused(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        check_ttl(ttl)


def test_ttl_bounds_are_accepted() -> None:
    assert check_ttl(2) == 2 and check_ttl(MAX_LEASE_TTL) == MAX_LEASE_TTL


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"address": "0.0.0.0:5000"}, "wildcard"),
        ({"address": "[::]:5000"}, "wildcard"),
        ({"address": "127.0.0.1"}, "host:port"),
        ({"advertise": "0.0.0.0:1"}, "advertise"),
        ({"methods": "ApiTest"}, "not one string"),
        ({"methods": [""]}, "non-empty"),
        ({"methods": {"M": 1}}, "MethodInfo"),
    ],
)
def test_bad_address_and_methods_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _build(**overrides)


@pytest.mark.parametrize(
    ("metadata", "version"),
    [({"zone": "a\ud800"}, "v1"), ({"k\udfff": "a"}, "v1"), ({}, "v\ud800")],
)
def test_text_that_cannot_be_written_as_utf8_is_refused(
    metadata: dict[str, str], version: str
) -> None:
    """Found by fuzzing: a lone surrogate made encode_record raise UnicodeEncodeError."""
    with pytest.raises(ValueError, match="not valid Unicode"):
        check_metadata(metadata)
        node_checks.check_version(version)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:9", ("::1", 9)),
        ("host.x:65535", ("host.x", 65535)),
    ],
)
def test_parse_address(address: str, parsed: tuple[str, int]) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize(
    "address", ["", "127.0.0.1", ":80", "h:0", "h:70000", "::1:80", "[::1]", "h:x"]
)
def test_parse_address_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(address)
