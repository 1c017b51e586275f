"""Node records, in both formats, as anyone with write access to a prefix can write them:
decoding raises nothing but RecordError, and a snapshot keeps each key's last good node."""

from __future__ import annotations

from typing import Any

import pytest
from fuzz_strategies import deeply_nested, dumps, fuzzing, json_values, mutated
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.errors import RecordError
from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.record import decode_record, encode_record, naming_op
from grpc_etcd.snapshot import Change, Snapshot, apply_changes, snapshot_from_kvs

SERVICE = "fz.srv.app"
PREFIX = "/fz/srv/app/"

SEED = {
    "node": {"name": "app", "path": "/fz/srv/app", "id": "app-1", "version": "v1",
             "address": "127.0.0.1:18089"},
    "metadata": {"zone": "a"},
    "endpoints": {"ApiTest": {"online": True, "limiting_switch": False, "limiting": 10,
                              "fuse": False, "defaults": "AAE="}},
}  # fmt: skip
NAMING = {"Op": 0, "Addr": "127.0.0.1:8080", "Metadata": {"version": "v2"}}

records = st.one_of(
    st.binary(max_size=64),
    json_values.map(dumps),
    mutated(SEED).map(dumps),
    mutated(NAMING).map(dumps),
    st.integers(1, 3000).map(deeply_nested),
)


def _valid(node: Node) -> None:
    """What every decoded node promises, whatever the record said."""
    assert isinstance(node.address, str) and node.address
    assert isinstance(node.id, str) and isinstance(node.version, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in node.metadata.items())
    assert all(isinstance(info, MethodInfo) for info in node.methods.values())
    assert all(isinstance(info.limiting, int) for info in node.methods.values())
    assert node.format in ("seed", "naming")
    strings = [node.id, node.address, node.version, *node.metadata, *node.metadata.values()]
    for text in [*strings, *node.methods]:
        text.encode("utf-8")  # printable, loggable: no lone surrogate survives


@fuzzing
@given(records)
def test_decode_raises_only_record_error(data: bytes) -> None:
    try:
        node = decode_record(data, key=PREFIX + "x", service=SERVICE)
    except RecordError as exc:
        assert exc.key == PREFIX + "x" and PREFIX + "x" in str(exc)
        return
    _valid(node)


@fuzzing
@given(records)
def test_naming_op_never_raises(data: bytes) -> None:
    assert naming_op(data) in (0, 1) or isinstance(naming_op(data), int)


def _good(draw: Any, key: str) -> tuple[bytes, Node]:
    node = Node(
        SERVICE,
        key.rsplit("/", 1)[-1],
        f"127.0.0.1:{draw(st.integers(1, 65535))}",
        draw(st.sampled_from(["v1", "v2"])),
        draw(st.dictionaries(st.sampled_from(["zone", "weight"]), st.text(max_size=8), max_size=2)),
        key=key,
    )
    data = encode_record(node)
    return data, decode_record(data, key=key, service=SERVICE)


@st.composite
def histories(draw: Any) -> list[tuple[str, str, bytes, Node | None]]:
    """Changes to a few keys: good records, garbage, deletes; with the node each good one is."""
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        key = PREFIX + draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(st.sampled_from(["good", "bad", "delete"]))
        if kind == "good":
            data, node = _good(draw, key)
            steps.append(("put", key, data, node))
        elif kind == "bad":
            bad = draw(records)
            try:
                node = decode_record(bad, key=key, service=SERVICE)
            except RecordError:
                steps.append(("put", key, bad, None))
            else:  # garbage that happens to decode is a good record
                steps.append(("put", key, bad, node))
        else:
            steps.append(("delete", key, b"", None))
    return steps


@fuzzing
@given(histories(), st.integers(1, 5))
def test_a_snapshot_keeps_each_keys_last_good_node(
    steps: list[tuple[str, str, bytes, Node | None]], batch: int
) -> None:
    expected: dict[str, Node] = {}
    snapshot = Snapshot(SERVICE, {}, 1)
    for start in range(0, len(steps), batch):
        chunk = steps[start : start + batch]
        changes = [Change(kind, key, value) for kind, key, value, _ in chunk]
        snapshot, errors = apply_changes(snapshot, changes, start + 2)
        for kind, key, value, node in chunk:
            if kind == "delete" or naming_op(value) == 1:
                expected.pop(key, None)
            elif node is not None:
                expected[key] = node
            # a bad record: the key keeps its last good node (or stays absent)
        assert dict(snapshot.nodes) == expected
        assert all(isinstance(error, RecordError) for error in errors)
    # a full read of what etcd holds now agrees with the incremental one where records are good
    final: dict[str, bytes] = {}
    for kind, key, value, _ in steps:
        if kind == "delete":
            final.pop(key, None)
        else:
            final[key] = value
    read, _ = snapshot_from_kvs(SERVICE, sorted(final.items()), 99, snapshot)
    for key, node in read.nodes.items():
        assert node == expected.get(key, node)


@pytest.mark.parametrize(
    ("data", "fault"),
    [  # what fuzzing found: each escaped decode_record as another exception
        (b'{"node":{"address":"h:1"},"endpoints":{"M":{"limiting":Infinity}}}', "not valid JSON"),
        (b'{"node":{"address":"h:1"},"endpoints":{"M":{"limiting":NaN}}}', "not valid JSON"),
        (b'{"node":{"address":"h:1"},"endpoints":{"M":{"limiting":1e400}}}', "limiting"),
        (deeply_nested(100_000), "nested too deeply"),
        (b'{"Addr":"h:1","Metadata":' + deeply_nested(5000) + b"}", "nested too deeply"),
    ],
)
def test_regressions(data: bytes, fault: str) -> None:
    with pytest.raises(RecordError, match=fault):
        decode_record(data, key="/k", service=SERVICE)
    assert naming_op(data) == 0


def test_lone_surrogates_become_replacement_characters_as_in_go() -> None:
    data = (
        b'{"node":{"address":"h:1","id":"a\\ud800b","version":"\\udfff"},'
        b'"metadata":{"k\\ud800":"v"}}'
    )
    node = decode_record(data, key="/k", service=SERVICE)
    assert (node.id, node.version, dict(node.metadata)) == ("a\ufffdb", "\ufffd", {"k\ufffd": "v"})
    pair = decode_record(b'{"node":{"address":"h:1","id":"\\ud83d\\ude00"}}', key="/k")
    assert pair.id == "\U0001f600"  # a valid pair stays one character
