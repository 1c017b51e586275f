"""grpc-etcd config and route set against a real etcd: nothing invalid is ever written."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import grpc_etcd
import grpc_etcd.cli._config
from grpc_etcd.cli import main
from grpc_etcd.cli._config import parse_fallback, parse_split
from grpc_etcd.config import config_key
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"
KEY = config_key(SERVICE)


@pytest.fixture
def fleet(etcd: EtcdServer) -> Iterator[grpc_etcd.Registry]:
    """One registered node of each version the tests route to (no server behind them: the
    checks read the registry only)."""
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for port, version in enumerate(("v1", "v2", "v3", "stable"), start=5001):
            registry.register(SERVICE, address=f"127.0.0.1:{port}", version=version)
        yield registry


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
    # what it does, as route set, rollback and history say it (config set said nothing)
    assert stored.stdout.splitlines()[1] == "  policy: round_robin; fallback: any"
    raw = _stored(etcd)
    assert raw is not None and json.loads(raw) == document
    shown = _cli(etcd, "config", "show", SERVICE)
    assert shown.exit_code == 0 and json.loads(shown.stdout) == document

    deleted = _cli(etcd, "config", "delete", SERVICE)
    assert deleted.exit_code == 0 and deleted.stdout.splitlines()[0] == f"deleted {KEY}"
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


def test_route_set_rewrites_routes_and_keeps_the_other_keys(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
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


def test_route_set_on_a_service_with_no_config_creates_one(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
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
        (["--split", "v1=0,v2=0"], "Error: --split 'v1=0,v2=0': the weights sum to 0"),
        (["--split", "v1=²"], "'v1=²': a weight is an integer >= 0, got '²'"),
        (["--split", "v1 x=1"], "'v1 x=1': version must be a non-empty string without spaces"),
        (["--split", "v1=4294967295,v2=1"], "the weights sum to 4294967296, above 4294967295"),
        (["--split", "v1=1,v1=2"], "names a version twice"),
        (["--fallback", "stable"], "'stable' is not LABEL=VALUE or 'any'"),
        ([], "give --split, --fallback or both"),
    ],
)
def test_route_set_refuses_bad_shares_and_changes_nothing(
    etcd: EtcdServer, fleet: grpc_etcd.Registry, args: list[str], fault: str
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


def _canary_commands() -> list[tuple[list[str], bool]]:
    """The grpc-etcd commands of docs/routing.md's canary walk, in order, each with whether the
    walk says it is refused (``# refused``)."""
    section = ROUTING_DOC.read_text().split("## A canary release", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    return [
        (shlex.split(line.split("#")[0])[1:], "# refused" in line)
        for line in lines
        if line.startswith("grpc-etcd ")
    ]


def test_the_canary_walk_of_the_routing_doc_runs_as_written(etcd: EtcdServer) -> None:
    """The operator's walk: v1 runs, v2 is started at step 2 (``ls``); a dry run and a refused
    typo write nothing; a rollback returns to the split before."""
    commands = _canary_commands()
    assert len(commands) >= 10, commands
    splits, dry_run = [], ""
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for i in range(2):
            registry.register(SERVICE, address=f"127.0.0.1:{5001 + i}", version="v1")
        for args, refused in commands:
            if args[0] == "ls":  # step 2: the v2 servers start
                registry.register(SERVICE, address="127.0.0.1:5003", version="v2")
            before = _stored(etcd)
            result = _cli(etcd, *args)
            assert result.exit_code == (1 if refused else 0), (args, result.output)
            if refused or "--dry-run" in args:
                assert _stored(etcd) == before, args
                dry_run = result.stdout if "--dry-run" in args else dry_run
            elif args[:2] in (["route", "set"], ["config", "rollback"]):
                raw = _stored(etcd)
                assert raw is not None
                (only,) = json.loads(raw)["routes"]
                splits.append({p["subset"]["version"]: p["weight"] for p in only["to"]})
    assert splits[0] == {"v1": 100, "v2": 0}  # from 0%
    at_50 = splits.index({"v1": 50, "v2": 50})
    assert splits[at_50 + 1] == splits[at_50 - 1] == {"v1": 90, "v2": 10}  # rolled back
    assert {"v1": 0, "v2": 100} in splits  # to 100%
    assert {"v1": 100, "v2": 0} in splits[1:]  # and back
    raw = _stored(etcd)
    assert raw is not None
    assert json.loads(raw)["fallback"] == [{"version": "v2"}, {}]
    assert re.search(r"version=v1 +100% +90% +2 nodes", dry_run), dry_run
    assert re.search(r"version=v2 +0% +10% +1 node", dry_run), dry_run


def test_route_set_on_a_stored_document_that_is_not_json_says_what_replaces_it(
    etcd: EtcdServer,
) -> None:
    etcd.etcdctl("put", KEY, "{not json")
    line = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--split", "v1=100"))
    assert "the stored document is not valid JSON" in line
    assert "'grpc-etcd config set' (a whole document) or 'config delete' replaces it" in line
    assert _stored(etcd) == b"{not json"


@pytest.mark.parametrize("stored", ['{"a": ' + "[" * 5000 + "]" * 5000 + "}", '{"a": NaN}'])
def test_a_stored_document_nested_too_deeply_or_with_nan_is_no_traceback(
    etcd: EtcdServer, fleet: grpc_etcd.Registry, stored: str
) -> None:
    """Written with etcdctl: clients ignore it (parse_config refuses it); route set and config
    show read it as JSON themselves, and a deep one raised RecursionError out of them."""
    with EtcdClient(etcd.endpoint) as client:
        client.put(KEY, stored)
    line = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--split", "v1=100"))
    assert "the stored document is not valid JSON" in line and "replaces it" in line
    shown = _cli(etcd, "config", "show", SERVICE)
    assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
    assert shown.stdout == stored + "\n"
    assert shown.stderr.startswith("warning: clients ignore it: ")
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 1
    assert _cli(etcd, "config", "rollback", SERVICE, "--to", str(_revision(etcd))).exit_code == 1


def _revision(etcd: EtcdServer) -> int:
    with EtcdClient(etcd.endpoint) as client:
        kv = client.get(KEY)
    assert kv is not None
    return kv.mod_revision


# ---------------------------------------------------------------- checks against the registry

TYPO = '{"routes": [{"to": [{"subset": {"verison": "v1"}}]}]}'


def test_a_typod_label_is_refused_in_one_line_and_force_stores_it(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """Issue 13's outage: {"verison": "v1"} was stored and failed every call."""
    line = _one_line_error(_cli(etcd, "config", "set", SERVICE, "-", stdin=TYPO))
    assert line == (
        'Error: refused: routes[0].to[0].subset {"verison": "v1"}: no node has the label '
        "'verison' - did you mean 'version'? (--force stores it anyway)"
    )
    assert _stored(etcd) is None
    forced = _cli(etcd, "config", "set", SERVICE, "-", "--force", stdin=TYPO)
    assert forced.exit_code == 0 and forced.stdout.startswith("stored ")
    assert forced.stderr.startswith("warning: stored anyway (--force): routes[0].to[0].subset")
    assert _stored(etcd) is not None


def test_a_split_to_a_version_not_deployed_is_refused(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """Issue 13: --split v1=50,v9=50 with no v9 server was stored with no word."""
    line = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--split", "v1=50,v9=50"))
    assert '{"version": "v9"}: no node has version \'v9\' (known: stable, v1, v2, v3)' in line
    assert _stored(etcd) is None
    typo = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--fallback", "version=stabel"))
    assert (
        'fallback[0] {"version": "stabel"}: no node has version \'stabel\' - did you mean ' in typo
    )
    staged = _cli(etcd, "route", "set", SERVICE, "--split", "v1=100,v9=0")  # 0%: allowed
    assert staged.exit_code == 0, staged.output


def test_a_locality_key_no_node_carries_is_refused(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    document = '{"locality": {"key": "zone", "mode": "prefer_local"}}'
    line = _one_line_error(_cli(etcd, "config", "set", SERVICE, "-", stdin=document))
    assert line == (
        'Error: refused: locality {"key": "zone"}: no node has the label \'zone\', so calls '
        "would ignore locality (no node has any label) (--force stores it anyway)"
    )
    assert _stored(etcd) is None


def test_a_service_with_no_node_is_refused_too(etcd: EtcdServer) -> None:
    line = _one_line_error(_cli(etcd, "route", "set", "hwholiday.srv.ap", "--split", "v1=100"))
    assert "matches no node: no node of hwholiday.srv.ap is registered" in line


#: A row of the dry run's table: where to, before, after, the nodes.
_SHARE_ROW = re.compile(r"^  (.+?) {2,}(\S+%) +(\S+%) +(\d+ nodes?: )")


def test_dry_run_shows_the_shares_before_and_after_and_writes_nothing(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100,v2=0").exit_code == 0
    before = _stored(etcd)
    result = _cli(
        etcd,
        "route",
        "set",
        SERVICE,
        "--split",
        "v1=50,v9=50",
        "--fallback",
        "version=stable",
        "--dry-run",
        "--force",
    )
    assert result.exit_code == 0, result.output
    assert _stored(etcd) == before
    lines = result.stdout.splitlines()
    assert lines[0] == f"dry run: nothing written to {KEY}"
    assert lines[1].split() == ["BEFORE", "AFTER", "NODES"]
    assert lines[2] == "calls that name no version:"
    rows = {m[1]: m.groups()[1:] for m in map(_SHARE_ROW.match, lines[3:]) if m}
    assert rows["version=v1"][:3] == ("100%", "50%", "1 node: "), rows
    assert rows["version=v9 -> fallback version=stable"][:3] == ("0%", "50%", "1 node: ")
    assert len(rows) == 2, rows
    assert "with --force, stored despite" in result.stderr
    refused = _cli(etcd, "route", "set", SERVICE, "--split", "v1=50,v9=50", "--dry-run")
    assert refused.exit_code == 1 and "version=v9 -> no node: fails (UNAVAILABLE)" in refused.stdout
    assert _stored(etcd) == before


def test_dry_run_compares_the_calls_no_route_matches_before_and_after(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """With a route that matches a header, the calls no route matches are 'other calls'; they
    were listed apart from the same calls before ('calls that name no version'), as if none of
    them had gone anywhere before. The calls with the header went, before the route, where
    every call went (they were shown at 0% before, as if they had gone nowhere)."""
    beta = {"routes": [{"match": {"headers": {"x-tier": "beta"}}, "to": [{"subset": {}}]}]}
    result = _cli(etcd, "config", "set", SERVICE, "-", "--dry-run", stdin=json.dumps(beta))
    assert result.exit_code == 0, result.output
    table: dict[str, list[tuple[str, ...]]] = {}
    for line in result.stdout.splitlines()[2:]:
        row = _SHARE_ROW.match(line)
        if row is None:
            table[line] = []
        else:
            table[list(table)[-1]].append(row.groups()[:3])
    assert table == {
        "calls with header x-tier=beta:": [("any", "100%", "100%")],
        "other calls:": [("any", "100%", "100%")],
    }, result.stdout


def _share_table(stdout: str) -> dict[str, set[tuple[str, ...]]]:
    """The dry run's table: per kind of call, its rows (where to, before, after)."""
    table: dict[str, set[tuple[str, ...]]] = {}
    for line in stdout.splitlines()[2:]:
        row = _SHARE_ROW.match(line)
        if row is None:
            table[line] = set()
        else:
            table[list(table)[-1]].add(row.groups()[:3])
    return table


def test_dry_run_of_a_route_with_a_match_says_where_its_calls_went_before_and_go_after(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """Calls of a kind one side does not list went (or go) where all of that side's calls do,
    when that side has no route with a match: not 0% everywhere, as if they went nowhere."""
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 0
    beta = {
        "routes": [
            {"match": {"headers": {"x-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
            {"to": [{"subset": {"version": "v1"}}]},
        ]
    }
    added = _cli(etcd, "config", "set", SERVICE, "-", "--dry-run", stdin=json.dumps(beta))
    assert added.exit_code == 0, added.output
    assert _share_table(added.stdout) == {
        "calls with header x-tier=beta:": {
            ("version=v2", "0%", "100%"),
            ("version=v1", "100%", "0%"),
        },
        "other calls:": {("version=v1", "100%", "100%")},
    }, added.stdout
    assert _cli(etcd, "config", "set", SERVICE, "-", stdin=json.dumps(beta)).exit_code == 0
    removed = _cli(etcd, "route", "set", SERVICE, "--split", "v1=100", "--dry-run")
    assert removed.exit_code == 0, removed.output
    assert _share_table(removed.stdout) == {
        "calls that name no version:": {("version=v1", "100%", "100%")},
        "calls with header x-tier=beta:": {
            ("version=v2", "100%", "0%"),
            ("version=v1", "0%", "100%"),
        },
    }, removed.stdout


def test_config_check_for_a_pipeline(
    etcd: EtcdServer, fleet: grpc_etcd.Registry, tmp_path: Path
) -> None:
    good, typo = tmp_path / "good.json", tmp_path / "typo.json"
    good.write_text('{"routes": [{"to": [{"subset": {"version": "v1"}}]}]}')
    typo.write_text(TYPO)
    ok = _cli(etcd, "config", "check", str(good), "--service", SERVICE)
    assert (
        ok.exit_code == 0
        and ok.stdout == f"{good}: valid, and fits the 4 registered nodes of {SERVICE}\n"
    )
    line = _one_line_error(_cli(etcd, "config", "check", str(typo), "--service", SERVICE))
    assert line.startswith(f"Error: {typo}: refused: ") and "did you mean 'version'?" in line
    assert "--force" not in line
    bad = _one_line_error(_cli(etcd, "config", "check", "-", "--service", SERVICE, stdin="{"))
    assert "bad service config at stdin: not valid JSON" in bad
    assert _stored(etcd) is None
    unreachable = CliRunner().invoke(
        main, ["--etcd", "127.0.0.1:1", "config", "check", str(typo), "--service", SERVICE]
    )
    assert unreachable.exit_code == 0, unreachable.output
    assert unreachable.stdout == f"{typo}: valid (schema only)\n"
    assert unreachable.stderr.startswith("warning: etcd not reached (")
    assert "checked against the schema only" in unreachable.stderr


def test_history_lists_the_stored_versions_and_rollback_stores_one_again(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    revisions = []
    for split in ("v1=100", "v1=90,v2=10", "v1=50,v2=50"):
        result = _cli(etcd, "route", "set", SERVICE, "--split", split)
        revisions.append(int(re.findall(r"revision (\d+)", result.stdout)[0]))
    listed = _cli(etcd, "config", "history", SERVICE)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "SUMMARY"]
    assert [int(line.split()[0]) for line in lines[1:4]] == revisions[::-1]
    assert lines[1].endswith("(now)") and "version=v1 50%, version=v2 50%" in lines[1]
    assert lines[4] == f"(created at revision {revisions[0]}; etcd records no time of a write)"

    back = _cli(etcd, "config", "rollback", SERVICE)
    assert back.exit_code == 0, back.output
    assert back.stdout.startswith(f"stored {SERVICE}'s config of revision {revisions[1]} again")
    raw = _stored(etcd)
    assert raw is not None and json.loads(raw)["routes"][0]["to"][1]["weight"] == 10
    to_first = _cli(etcd, "config", "rollback", SERVICE, "--to", str(revisions[0]))
    assert to_first.exit_code == 0, to_first.output
    raw = _stored(etcd)
    assert raw is not None and len(json.loads(raw)["routes"][0]["to"]) == 1

    etcd.etcdctl("compaction", str(revisions[2]))
    gone = _one_line_error(_cli(etcd, "config", "rollback", SERVICE, "--to", str(revisions[0])))
    assert f"etcd has compacted revision {revisions[0]} away" in gone
    after = _cli(etcd, "config", "history", SERVICE).stdout.splitlines()
    assert after[-1].startswith("(etcd has compacted the history before revision ")
    assert "not reached revision" in _one_line_error(
        _cli(etcd, "config", "rollback", SERVICE, "--to", "999999")
    )
    beyond_int64 = "99999999999999999999999"  # was protobuf's "Value out of range: ..."
    assert f"etcd has not reached revision {beyond_int64} yet" in _one_line_error(
        _cli(etcd, "config", "rollback", SERVICE, "--to", beyond_int64)
    )


def test_rollback_is_checked_like_a_new_document(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    first = _cli(etcd, "route", "set", SERVICE, "--split", "v1=50,v3=50")
    assert first.exit_code == 0
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 0
    fleet.close()  # every node leaves: v3 with them
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address="127.0.0.1:5009", version="v1")
        line = _one_line_error(_cli(etcd, "config", "rollback", SERVICE))
        assert "no node has version 'v3' (known: v1)" in line
        assert _cli(etcd, "config", "rollback", SERVICE, "--force").exit_code == 0


def test_rollback_says_when_there_is_nothing_to_go_back_to(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    assert "no config stored for" in _one_line_error(_cli(etcd, "config", "rollback", SERVICE))
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 0
    assert "has no earlier version: it was created at revision" in _one_line_error(
        _cli(etcd, "config", "rollback", SERVICE)
    )
    assert "no config was stored for" in _one_line_error(
        _cli(etcd, "config", "rollback", SERVICE, "--to", "1")
    )


def test_history_after_a_delete_says_which_command_reaches_the_documents_before_it(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """history has no --to: after a delete it named one, as if history took it. The delete
    says the revision to give it (etcd lists no versions of a deleted key)."""
    stored = _cli(etcd, "route", "set", SERVICE, "--split", "v1=100")
    revision = re.findall(r"revision (\d+)", stored.stdout)[0]
    deleted = _cli(etcd, "config", "delete", SERVICE)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.splitlines()[1] == (
        f"  'grpc-etcd config rollback {SERVICE} --to {revision}' stores it again"
    )
    listed = _cli(etcd, "config", "history", SERVICE)
    assert listed.exit_code == 0, listed.output
    (line,) = listed.stdout.splitlines()
    assert "'grpc-etcd config rollback SERVICE --to REVISION'" in line, line
    assert "--to" not in _cli(etcd, "config", "history", "--help").stdout.split("Options:")[1]
    back = _cli(etcd, "config", "rollback", SERVICE, "--to", revision)
    assert back.exit_code == 0 and _stored(etcd) is not None, back.output


def test_a_key_given_twice_in_a_file_is_refused(
    etcd: EtcdServer, fleet: grpc_etcd.Registry
) -> None:
    """{"routes": [a split], "routes": []} validated as no route at all (the last one wins)."""
    twice = '{"routes": [{"to": [{"subset": {"version": "v1"}}]}], "fallback": [], "routes": []}'
    for command in (
        ["config", "set", SERVICE, "-"],
        ["config", "check", "-", "--service", SERVICE],
    ):
        line = _one_line_error(_cli(etcd, *command, stdin=twice))
        assert (
            line == "Error: bad service config at stdin: key 'routes' is given twice in one object"
        )
    nested = '{"routes": [{"to": [{"subset": {"version": "v1", "version": "v2"}}]}]}'
    assert "key 'version' is given twice" in _one_line_error(
        _cli(etcd, "config", "set", SERVICE, "-", stdin=nested)
    )
    assert _stored(etcd) is None


def test_a_write_made_meanwhile_is_not_lost(
    etcd: EtcdServer, fleet: grpc_etcd.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """route set reads the document, edits it, writes it: another operator's write in between
    (made here while the checks run) makes it refuse instead of overwriting."""
    assert _cli(etcd, "route", "set", SERVICE, "--split", "v1=100").exit_code == 0
    checks = grpc_etcd.cli._config.check_config

    def meanwhile(*args: object) -> object:
        etcd.etcdctl("put", KEY, '{"fallback": [{}]}')
        return checks(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(grpc_etcd.cli._config, "check_config", meanwhile)
    line = _one_line_error(_cli(etcd, "route", "set", SERVICE, "--split", "v1=90,v2=10"))
    assert "config changed while this ran (someone else wrote it): nothing written" in line
    assert _stored(etcd) == b'{"fallback": [{}]}'
