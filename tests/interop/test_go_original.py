"""Interoperability with the Go original's record (SEED.md's wire contract).

The literal-JSON test always runs. The Go test decodes our records with the original's Go
types through Go's own encoding/json (strict: unknown fields refused) and checks that Go
writes back the very same bytes; it runs where a Go toolchain is installed (.ci/run installs
Debian's golang-go when it can) and is skipped elsewhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from grpc_etcd.node import MethodInfo, Node, encode_record

HERE = Path(__file__).parent

# The original's record, as SEED.md quotes it: the field names, types and nesting to keep.
SEED_LITERAL = (
    '{"node":{"name":"app","path":"/hwholiday/srv/app",'
    '"id":"app-f76d0cba-e89a-11f1-9219-4ae0537f718b","version":"v1",'
    '"address":"127.0.0.1:18089"},"metadata":null,"endpoints":{"ApiTest":{"online":true,'
    '"limiting_switch":false,"limiting":10,"fuse":false,"defaults":null}}}'
)

NODES = [
    Node(
        "hwholiday.srv.app",
        "app-f76d0cba-e89a-11f1-9219-4ae0537f718b",
        "127.0.0.1:18089",
        "v1",
        methods={"ApiTest": MethodInfo()},
    ),
    Node(
        "hwholiday.srv.app",
        "app-1",
        "127.0.0.1:18090",
        "v2",
        metadata={"zone": "a<b>&c", "weight": "30", "ünï": "cødé"},
        methods={
            "ApiTest": MethodInfo(defaults=b"\x00\x01fallback"),
            "Other": MethodInfo(online=False, limiting_switch=True, limiting=250, fuse=True),
        },
    ),
    Node("hwholiday.srv.msg", "msg-2", "[::1]:18091", "latest"),
]


def shape(value: object) -> object:
    """The JSON structure with the leaves replaced by their type names."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def test_our_record_has_the_originals_names_types_and_nesting() -> None:
    ours = json.loads(encode_record(NODES[0]))
    assert list(ours) == ["node", "metadata", "endpoints"]
    assert shape(ours) == shape(json.loads(SEED_LITERAL))
    assert encode_record(NODES[0]).decode() == SEED_LITERAL


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain (golang-go)")
@pytest.mark.parametrize("node", NODES, ids=lambda n: n.id)
def test_go_original_types_decode_our_record_and_write_the_same_bytes(
    node: Node, tmp_path: Path
) -> None:
    binary = tmp_path / "seed_record"
    env = {
        "GOCACHE": str(tmp_path / "gocache"),
        "GO111MODULE": "off",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin:/usr/local/go/bin",
    }
    subprocess.run(
        ["go", "build", "-o", str(binary), str(HERE / "seed_record.go")],
        check=True,
        env=env,
        capture_output=True,
    )
    ours = encode_record(node)
    result = subprocess.run([str(binary)], input=ours, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == ours
