"""grpc-etcd ls and watch against a real etcd."""

from __future__ import annotations

import json

import pytest
from cli_helpers import CliProcess
from click.testing import CliRunner

import grpc_etcd
from grpc_etcd.cli import COMMANDS, main
from grpc_etcd.testing import EtcdServer, TcpProxy


def test_help_lists_every_command_group() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:")[1].split()
    assert set(COMMANDS) <= set(listed)
    for name in COMMANDS:
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Usage: " in sub.output, (name, sub.output)


def test_ls_table_json_and_bad_record(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", "/hwholiday/srv/app/bad", "not json")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        reg = registry.register(
            "hwholiday.srv.app", address="127.0.0.1:5001", version="v1", metadata={"zone": "a"}
        )
        registry.register("hwholiday.srv.user", address="127.0.0.1:5003", version="v3")
        runner = CliRunner()
        table = runner.invoke(main, ["--etcd", etcd.endpoint, "ls"])
        assert table.exit_code == 0, table.output
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["SERVICE", "ID", "VERSION", "ADDRESS", "METADATA", "TTL"]
        assert any(reg.node.id in line and "zone=a" in line and "v1" in line for line in lines)
        assert any(line.startswith("hwholiday.srv.user") for line in lines)
        assert "/hwholiday/srv/app/bad" in table.stderr

        as_json = runner.invoke(
            main, ["ls", "hwholiday.srv.app", "--json"], env={"GRPC_ETCD_ENDPOINTS": etcd.endpoint}
        )
        (row,) = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert row["id"] == reg.node.id and row["metadata"] == {"zone": "a"}
        assert 0 < row["ttl"] <= 10


def test_watch_prints_one_line_per_change(etcd: EtcdServer) -> None:
    with CliProcess(["--etcd", etcd.endpoint, "watch", "hwholiday.srv.app"]) as cli:
        assert "no nodes" in cli.line()
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            reg = registry.register("hwholiday.srv.app", address="127.0.0.1:5001", version="v1")
            added = cli.line()
            assert added.startswith(f"+ {reg.node.id}") and "v1" in added
            assert added.endswith(", 1 node)")
            reg.update(version="v2")
            assert cli.line().startswith(f"~ {reg.node.id}  v2")
        removed = cli.line()
        assert removed.startswith(f"- {reg.node.id}") and removed.endswith(", 0 nodes)")
        assert cli.stop() == 0


def test_watch_says_once_when_its_view_is_stale_and_when_it_is_back(etcd: EtcdServer) -> None:
    with (
        TcpProxy(etcd.endpoint) as proxy,
        CliProcess(["--etcd", proxy.endpoint, "--timeout", "1", "watch", "a.srv.app"]) as cli,
    ):
        assert "no nodes" in cli.line()
        proxy.cut()
        assert cli.line().startswith("! etcd is not answering (")
        # a change while cut off: the watch shows it once etcd is reachable again
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            reg = registry.register("a.srv.app", address="127.0.0.1:5001", version="v1")
            proxy.restore()
            assert cli.line() == "! etcd answers again: changes follow"
            assert cli.line(timeout=30).startswith(f"+ {reg.node.id}")
        assert cli.line().startswith(f"- {reg.node.id}")
        assert cli.stop() == 0
        assert cli.stderr_lines() == []  # no repeated warnings: the one line said it


def test_watch_json_reports_staleness_as_objects(etcd: EtcdServer) -> None:
    with (
        TcpProxy(etcd.endpoint) as proxy,
        CliProcess(
            ["--etcd", proxy.endpoint, "--timeout", "1", "watch", "a.srv.b", "--json"]
        ) as cli,
    ):
        assert json.loads(cli.line())["added"] == []
        proxy.cut()
        stale = json.loads(cli.line())
        assert stale["stale"] is True and stale["error"]
        proxy.restore()
        assert json.loads(cli.line()) == {"stale": False, "error": None}


@pytest.mark.parametrize(
    ("name", "fault"),
    [("", "non-empty"), ("a/b/c", "must be dotted (e.g. 'a.b.c')"), ("bad name", "white space")],
)
@pytest.mark.parametrize("command", ["ls", "watch"])
def test_bad_service_names_are_refused(
    etcd: EtcdServer, command: str, name: str, fault: str
) -> None:
    result = CliRunner().invoke(main, ["--etcd", etcd.endpoint, command, name])
    assert result.exit_code == 1
    assert fault in result.stderr and len(result.stderr.splitlines()) == 1


def test_ls_skips_grpc_etcds_own_keys_and_uses_one_order(etcd: EtcdServer) -> None:
    """Issue 13: a stored config is no bad node record; the table and --json agree on order."""
    etcd.etcdctl("put", "/grpc-etcd/config/hwholiday.srv.app", '{"fallback": [{}]}')
    etcd.etcdctl("put", "/grpc-etcd/clients/hwholiday.srv.app/c1", '{"zone": "a"}')
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for i, version in enumerate(["v2", "v1", "v3", "v1"]):
            registry.register("hwholiday.srv.app", address=f"127.0.0.1:{5001 + i}", version=version)
        runner = CliRunner()
        table = runner.invoke(main, ["--etcd", etcd.endpoint, "ls"])
        as_json = runner.invoke(main, ["--etcd", etcd.endpoint, "ls", "--json"])
    assert table.exit_code == 0 and as_json.exit_code == 0, table.output + as_json.output
    assert table.stderr == "" and as_json.stderr == ""
    in_table = [line.split()[1] for line in table.stdout.splitlines()[1:]]
    in_json = [json.loads(line)["id"] for line in as_json.stdout.splitlines()]
    assert len(in_table) == 4 and in_table == in_json
    versions = [json.loads(line)["version"] for line in as_json.stdout.splitlines()]
    assert versions == sorted(versions)


@pytest.mark.parametrize("name", ["grpc-etcd.config.app", "grpc-etcd/config/app"])
def test_grpc_etcds_own_namespace_is_no_service_name(name: str) -> None:
    with pytest.raises(ValueError, match="grpc-etcd"):
        grpc_etcd.naming.service_prefix(name)


def test_ls_of_every_service_skips_the_own_keys_of_every_root(etcd: EtcdServer) -> None:
    """A config stored under --root /prod was read as a bad node record by a plain ``ls``."""
    etcd.etcdctl("put", "/prod/grpc-etcd/config/a.srv.b", '{"fallback": [{}]}')
    etcd.etcdctl("put", "/prod/grpc-etcd/clients/a.srv.b/c1", '{"zone": "a"}')
    with grpc_etcd.Registry(etcd.endpoint, root="/prod") as registry:
        registry.register("a.srv.b", address="127.0.0.1:5001", version="v1")
        result = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["prod.a.srv.b"]


def test_ls_and_register_agree_on_grpc_etcd_in_a_name(etcd: EtcdServer) -> None:
    """``ls`` skips what lies under any ``.../grpc-etcd/`` (a root's own keys); a service named
    ``a.grpc-etcd.b`` would have lain there, hidden: it is refused, by ``ls`` as by register()."""
    etcd.etcdctl("put", "/a/grpc-etcd/config/b", '{"fallback": [{}]}')  # root /a's config of b
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register("a.grpc-etcd2.b", address="127.0.0.1:5001", version="v1")
        listed = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls"])
        refused = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls", "a.grpc-etcd.b"])
    assert listed.exit_code == 0 and listed.stderr == "", listed.output
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["a.grpc-etcd2.b"]
    assert refused.exit_code == 1
    (line,) = refused.stderr.splitlines()
    assert "'grpc-etcd' is no part of a service name" in line


def test_ls_of_every_service_says_once_for_the_keys_of_other_applications(
    etcd: EtcdServer,
) -> None:
    """On an etcd shared with other applications, ls called each of their keys 'a bad
    registry record', one warning a key. A bad record beside good ones (a service's) is still
    named one by one."""
    for i in range(5):
        etcd.etcdctl("put", f"/myapp/settings/k{i}", "postgres://x")
    etcd.etcdctl("put", "/hwholiday/srv/app/bad", "not json")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register("hwholiday.srv.app", address="127.0.0.1:5001", version="v1")
        every = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls"])
        assert every.exit_code == 0, every.output
        bad, foreign = every.stderr.splitlines()
        assert bad.startswith("warning: skipping bad registry record at /hwholiday/srv/app/bad")
        assert foreign == (
            "warning: skipping 5 keys under / beside no registry record (another application's? "
            "--root narrows ls; 'ls SERVICE' says what is wrong with each): /myapp/settings/k0, "
            "/myapp/settings/k1, /myapp/settings/k2 (+2 more)"
        )
        one = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls", "myapp.settings"])
        warnings = [line for line in one.stderr.splitlines() if line.startswith("warning: ")]
        assert one.exit_code == 0 and len(warnings) == 5, one.output
        assert "bad registry record at /myapp/settings/k4" in one.stderr
