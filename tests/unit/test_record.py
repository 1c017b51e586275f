"""grpc_etcd.record, the codecs of a node's etcd record: against the Go original's bytes,
etcd's naming format and bad input; where they live, and the one default version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpc_etcd.node
import grpc_etcd.record
from grpc_etcd.errors import RecordError
from grpc_etcd.node import DEFAULT_VERSION, MethodInfo, Node, decode_record, encode_record

VECTORS = Path(__file__).resolve().parents[1] / "vectors"  # copied from shared/vectors
SEED_KEY = "/hwholiday/srv/app/app-f76d0cba-e89a-11f1-9219-4ae0537f718b"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_seed_record_round_trips_byte_for_byte() -> None:
    data = vector("seed-record.json")
    node = decode_record(data, key=SEED_KEY, service="hwholiday.srv.app")
    assert node.version == "v1"
    assert node.address == "127.0.0.1:18089"
    assert node.id == "app-f76d0cba-e89a-11f1-9219-4ae0537f718b"
    assert node.methods == {"ApiTest": MethodInfo(online=True, limiting=10)}
    assert encode_record(node) == data


def test_we_write_the_seed_record_from_scratch() -> None:
    node = Node(
        service="hwholiday.srv.app",
        id="app-f76d0cba-e89a-11f1-9219-4ae0537f718b",
        address="127.0.0.1:18089",
        version="v1",
        methods={"ApiTest": MethodInfo()},
    )
    assert encode_record(node) == vector("seed-record.json")


def test_record_without_methods_writes_empty_endpoints() -> None:
    data = vector("seed-record-no-methods.json")
    node = decode_record(data, key="/hwholiday/srv/msg/x", service="hwholiday.srv.msg")
    assert node.methods == {}
    assert encode_record(node) == data


def test_minimal_record_is_accepted_and_id_comes_from_the_key() -> None:
    node = decode_record(vector("seed-record-minimal.json"), key="/a/b/c/inst-1", service="a.b.c")
    assert (node.id, node.version, node.address) == ("inst-1", "v1", "127.0.0.1:18191")
    assert node.metadata == {} and node.methods == {}


def test_field_names_match_case_insensitively_and_unknown_fields_are_ignored() -> None:
    data = b'{"Node":{"Version":"v3","ADDRESS":"10.0.0.1:1","online":true},"extra":[1,2]}'
    node = decode_record(data, key="/s/x", service="s")
    assert (node.version, node.address) == ("v3", "10.0.0.1:1")


def test_metadata_and_weight() -> None:
    node = Node("a.b", "b-1", "127.0.0.1:1", metadata={"zone": "a", "weight": "30"})
    data = encode_record(node)
    assert json.loads(data)["metadata"] == {"weight": "30", "zone": "a"}
    assert data.index(b'"weight"') < data.index(b'"zone"'), "Go writes map keys sorted"
    assert decode_record(data, key="/a/b/b-1", service="a.b").weight == 30
    assert Node("a.b", "b-1", "h:1", metadata={"weight": "x"}).weight is None


def test_go_html_escapes_and_base64_defaults() -> None:
    node = Node(
        "a.b",
        "b-1",
        "127.0.0.1:1",
        metadata={"note": "<a&b>"},
        methods={"M": MethodInfo(defaults=b"\x00\xff")},
    )
    data = encode_record(node)
    assert b"\\u003ca\\u0026b\\u003e" in data
    assert b'"defaults":"AP8="' in data
    assert decode_record(data, key="/a/b/b-1", service="a.b") == Node(
        "a.b",
        "b-1",
        "127.0.0.1:1",
        metadata={"note": "<a&b>"},
        methods={"M": MethodInfo(defaults=b"\x00\xff")},
        key="/a/b/b-1",
    )


def test_etcd_naming_format() -> None:
    data = b'{"Op":0,"Addr":"127.0.0.1:8080","Metadata":{"version":"v2","zone":"b"}}'
    node = decode_record(data, key="foo/bar/svc/127.0.0.1:8080", service="foo/bar/svc")
    assert (node.address, node.version, node.format) == ("127.0.0.1:8080", "v2", "naming")
    plain = decode_record(b'{"Addr":"h:1","Metadata":"opaque"}', key="t/1", service="t")
    assert (plain.version, plain.metadata) == ("latest", {})  # node.DEFAULT_VERSION


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"metadata":null}', "neither 'node'"),
        (b'{"node":"x"}', "'node' must be an object"),
        (b'{"node":{"version":"v1"}}', "no node.address"),
        (b'{"node":{"address":5}}', "node.address must be a string"),
        (b'{"Addr":""}', "empty Addr"),
        (b'{"node":{"address":"h:1"},"endpoints":{"M":{"defaults":"!!"}}}', "not base64"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_records_name_their_key(data: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason) as info:
        decode_record(data, key="/svc/bad-1", service="svc")
    assert info.value.key == "/svc/bad-1"
    assert "/svc/bad-1" in str(info.value)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_ident = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


@given(
    service=st.lists(_ident, min_size=1, max_size=4).map(".".join),
    node_id=_ident,
    version=_text,
    port=st.integers(1, 65535),
    metadata=st.dictionaries(_text, _text, max_size=4),
    methods=st.dictionaries(
        _ident,
        st.builds(
            MethodInfo,
            st.booleans(),
            st.booleans(),
            st.integers(0, 10**6),
            st.booleans(),
            st.none() | st.binary(max_size=8),
        ),
        max_size=3,
    ),
)
def test_encode_decode_round_trip(
    service: str,
    node_id: str,
    version: str,
    port: int,
    metadata: dict[str, str],
    methods: dict[str, MethodInfo],
) -> None:
    key = "/" + service.replace(".", "/") + "/" + node_id
    node = Node(service, node_id, f"127.0.0.1:{port}", version, metadata, methods, key=key)
    data = encode_record(node)
    assert decode_record(data, key=key, service=service) == node
    assert encode_record(decode_record(data, key=key, service=service)) == data


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


def test_node_online_false_in_the_record_is_read() -> None:
    record = b'{"node":{"id":"a","address":"127.0.0.1:1","version":"v1","online":false}}'
    assert decode_record(record, key="/s/a").online is False
    assert decode_record(record.replace(b',"online":false', b""), key="/s/a").online is True
