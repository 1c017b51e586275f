"""grpc_etcd.record, the codecs of a node's etcd record (the byte-exact vectors are checked in
test_node.py): where they live, and the one default version."""

from __future__ import annotations

import pytest

import grpc_etcd.node
import grpc_etcd.record
from grpc_etcd.node import DEFAULT_VERSION, Node


def test_the_codecs_stay_importable_from_node() -> None:
    from grpc_etcd.node import decode_record, encode_record, naming_op

    assert decode_record is grpc_etcd.record.decode_record
    assert encode_record is grpc_etcd.record.encode_record
    assert naming_op is grpc_etcd.record.naming_op
    with pytest.raises(AttributeError, match="no_such_codec"):
        _ = grpc_etcd.node.no_such_codec  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        b'{"node":{"address":"127.0.0.1:1"}}',
        b'{"node":{"address":"127.0.0.1:1","version":null}}',
        b'{"Op":0,"Addr":"127.0.0.1:1"}',
        b'{"Op":0,"Addr":"127.0.0.1:1","Metadata":{"zone":"a"}}',
    ],
)
def test_a_record_without_a_version_has_the_one_default(data: bytes) -> None:
    node = grpc_etcd.record.decode_record(data, key="/s/x", service="s")
    assert node.version == DEFAULT_VERSION == Node("s", "x", "127.0.0.1:1").version == "latest"


def test_an_empty_version_written_as_such_is_kept() -> None:
    data = b'{"node":{"address":"127.0.0.1:1","version":""}}'
    assert grpc_etcd.record.decode_record(data, key="/s/x", service="s").version == ""


def test_register_defaults_to_the_same_version() -> None:
    import inspect

    import grpc_etcd.aio

    for registry in (grpc_etcd.Registry, grpc_etcd.aio.Registry):
        default = inspect.signature(registry.register).parameters["version"].default
        assert default == DEFAULT_VERSION
