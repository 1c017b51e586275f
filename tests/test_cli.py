"""The grpc-etcd command against a real etcd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import grpc_etcd
from grpc_etcd.cli import COMMANDS, main
from grpc_etcd.testing import EtcdServer

CLI = [sys.executable, "-m", "grpc_etcd.cli"]


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


def test_unreachable_etcd_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["--etcd", "127.0.0.1:1", "--timeout", "0.5", "ls"])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_bad_service_name_is_one_clear_line(etcd: EtcdServer) -> None:
    result = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "ls", "bad name"])
    assert result.exit_code == 1 and "white space" in result.stderr


def test_watch_prints_one_line_per_change(etcd: EtcdServer) -> None:
    proc = subprocess.Popen(
        [*CLI, "--etcd", etcd.endpoint, "watch", "hwholiday.srv.app"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "no nodes" in proc.stdout.readline()
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            reg = registry.register("hwholiday.srv.app", address="127.0.0.1:5001", version="v1")
            added = proc.stdout.readline()
            assert added.startswith(f"+ {reg.node.id}") and "v1" in added
            reg.update(version="v2")
            assert proc.stdout.readline().startswith(f"~ {reg.node.id}  v2")
        assert proc.stdout.readline().startswith(f"- {reg.node.id}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_etcd_command_runs_a_throwaway_etcd(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "etcd"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in first
        endpoint = first.split("listening on ")[1].split()[0]
        with grpc_etcd.Registry(endpoint) as registry:
            assert registry.nodes("any.service") == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
