"""grpc-etcd config and route set against a real etcd: nothing invalid is ever written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from grpc_etcd.cli import main
from grpc_etcd.cli._config import parse_fallback, parse_split
from grpc_etcd.config import config_key
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"
KEY = config_key(SERVICE)


def _cli(etcd: EtcdServer, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--etcd", etcd.endpoint, *args], input=stdin)


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


def _stored(etcd: EtcdServer) -> bytes | None:
    with EtcdClient(etcd.endpoint) as client:
        kv = client.get(KEY)
    return None if kv is None else kv.value


def test_set_show_delete(etcd: EtcdServer, tmp_path: Path) -> None:
    document = {"loadBalancingConfig": [{"round_robin": {}}], "fallback": [{}]}
    path = tmp_path / "app.json"
    path.write_text(json.dumps(document))
    assert "no config stored for hwholiday.srv.app" in _one_line_error(
        _cli(etcd, "config", "show", SERVICE)
    )

    stored = _cli(etcd, "config", "set", SERVICE, str(path))
    assert stored.exit_code == 0, stored.output
    assert stored.stdout.startswith(f"stored {SERVICE}'s config at {KEY} (revision ")
    raw = _stored(etcd)
    assert raw is not None and json.loads(raw) == document
    shown = _cli(etcd, "config", "show", SERVICE)
    assert shown.exit_code == 0 and json.loads(shown.stdout) == document

    deleted = _cli(etcd, "config", "delete", SERVICE)
    assert deleted.exit_code == 0 and deleted.stdout.strip() == f"deleted {KEY}"
    assert _stored(etcd) is None
    again = _cli(etcd, "config", "delete", SERVICE)
    assert again.exit_code == 0 and "no config stored" in again.stdout


def test_set_reads_stdin(etcd: EtcdServer) -> None:
    result = _cli(etcd, "config", "set", SERVICE, "-", stdin='{"routes": []}')
    assert result.exit_code == 0, result.output
    assert _stored(etcd) == b'{"routes":[]}'


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        (
            '{"routes": [{"to": [{"subset": {"version": "v1"}, "weight": -1}]}]}',
            "routes[0].to[0].weight",
        ),
        ('{"loadBalancingConfig": [{"no_such_policy": {}}]}', "no_such_policy"),
        ('{"rotues": []}', "unknown key 'rotues'"),
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
    ],
)
def test_a_refused_document_is_one_line_and_changes_nothing(
    etcd: EtcdServer, text: str, fault: str
) -> None:
    assert _cli(etcd, "config", "set", SERVICE, "-", stdin='{"fallback": [{}]}').exit_code == 0
    before = _stored(etcd)
    line = _one_line_error(_cli(etcd, "config", "set", SERVICE, "-", stdin=text))
    assert "bad service config at stdin" in line and fault in line
    assert _stored(etcd) == before


def test_show_warns_when_the_stored_document_is_one_clients_ignore(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", KEY, '{"routes": "nope"}')
    result = _cli(etcd, "config", "show", SERVICE)
    assert result.exit_code == 0 and json.loads(result.stdout) == {"routes": "nope"}
    assert result.stderr.startswith("warning: clients ignore it: bad service config at " + KEY)


def test_schema_is_the_documents_json_schema(etcd: EtcdServer) -> None:
    result = CliRunner().invoke(main, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"routes", "fallback", "loadBalancingConfig"} <= set(schema["properties"])


def test_route_set_rewrites_routes_and_keeps_the_other_keys(etcd: EtcdServer) -> None:
    old = {
        "loadBalancingConfig": [{"p2c_ewma": {}}],
        "routes": [{"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]}],
    }
    assert _cli(etcd, "config", "set", SERVICE, "-", stdin=json.dumps(old)).exit_code == 0
    result = _cli(etcd, "route", "set", SERVICE, "--split", "v1=90,v2=10")
    assert result.exit_code == 0, result.output
    assert "split: version=v1 90%, version=v2 10%" in result.stdout
    assert "(replaced 1 routes, 1 with a match)" in result.stdout
    raw = _stored(etcd)
    assert raw is not None
    assert json.loads(raw) == {
        "loadBalancingConfig": [{"p2c_ewma": {}}],
        "routes": [
            {
                "to": [
                    {"subset": {"version": "v1"}, "weight": 90},
                    {"subset": {"version": "v2"}, "weight": 10},
                ]
            }
        ],
    }
    fallback = _cli(etcd, "route", "set", SERVICE, "--fallback", "version=stable,any")
    assert fallback.exit_code == 0 and "fallback: version=stable then any" in fallback.stdout
    raw = _stored(etcd)
    assert raw is not None
    document = json.loads(raw)
    assert document["fallback"] == [{"version": "stable"}, {}]
    assert len(document["routes"]) == 1 and document["loadBalancingConfig"]


def test_route_set_on_a_service_with_no_config_creates_one(etcd: EtcdServer) -> None:
    result = _cli(etcd, "route", "set", SERVICE, "--split", "v1=100")
    assert result.exit_code == 0, result.output
    raw = _stored(etcd)
    assert raw is not None
    assert json.loads(raw) == {"routes": [{"to": [{"subset": {"version": "v1"}, "weight": 100}]}]}


@pytest.mark.parametrize(
    ("args", "fault"),
    [
        (["--split", "v1=90,v2"], "'v2' is not VERSION=WEIGHT"),
        (["--split", "v1=-5"], "'v1=-5': a weight is an integer >= 0, got '-5'"),
        (["--split", "v1=1.5"], "'v1=1.5': a weight is an integer >= 0, got '1.5'"),
        (["--split", "v1="], "'v1=' is not VERSION=WEIGHT"),
        (["--split", "v1=0,v2=0"], "the weights sum to 0"),
        (["--split", "v1=1,v1=2"], "names a version twice"),
        (["--fallback", "stable"], "'stable' is not LABEL=VALUE or 'any'"),
        ([], "give --split, --fallback or both"),
    ],
)
def test_route_set_refuses_bad_shares_and_changes_nothing(
    etcd: EtcdServer, args: list[str], fault: str
) -> None:
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 0
    before = _stored(etcd)
    assert fault in _one_line_error(_cli(etcd, "route", "set", SERVICE, *args))
    assert _stored(etcd) == before


def test_bad_service_names_are_refused_before_etcd_is_asked() -> None:
    result = CliRunner().invoke(main, ["--etcd", "127.0.0.1:1", "config", "show", "a/b"])
    assert "must be dotted" in _one_line_error(result)


def test_split_and_fallback_parsing() -> None:
    assert parse_split(" v1 = 90 , v2=10") == [
        {"subset": {"version": "v1"}, "weight": 90},
        {"subset": {"version": "v2"}, "weight": 10},
    ]
    assert parse_fallback("zone=a,version=stable,any") == [
        {"zone": "a"},
        {"version": "stable"},
        {},
    ]


ROUTING_DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def _canary_commands() -> list[list[str]]:
    """The grpc-etcd commands of docs/routing.md's canary walk, in order."""
    section = ROUTING_DOC.read_text().split("## A canary release", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("grpc-etcd ")]


def test_the_canary_walk_of_the_routing_doc_runs_as_written(etcd: EtcdServer) -> None:
    commands = _canary_commands()
    assert len(commands) >= 6, commands
    splits = []
    for args in commands:
        result = _cli(etcd, *args)
        assert result.exit_code == 0, (args, result.output)
        if args[:2] == ["route", "set"]:
            raw = _stored(etcd)
            assert raw is not None
            (only,) = json.loads(raw)["routes"]
            splits.append({p["subset"]["version"]: p["weight"] for p in only["to"]})
    assert splits[0] == {"v1": 100, "v2": 0}  # from 0%
    assert {"v1": 0, "v2": 100} in splits  # to 100%
    assert {"v1": 100, "v2": 0} in splits[1:]  # and back
    raw = _stored(etcd)
    assert raw is not None
    assert json.loads(raw)["fallback"] == [{"version": "v2"}, {}]


def test_route_set_on_a_stored_document_that_is_not_json_says_what_replaces_it(
    etcd: EtcdServer,
) -> None:
    etcd.etcdctl("put", KEY, "{not json")
    line = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--split", "v1=100"))
    assert "the stored document is not valid JSON" in line
    assert "'grpc-etcd config set' (a whole document) or 'config delete' replaces it" in line
    assert _stored(etcd) == b"{not json"
