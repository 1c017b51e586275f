"""Usage mistakes are errors like any other: one line on stderr, exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "grpc_etcd.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("config", "set", "hwholiday.srv.app"), "Missing argument 'FILE'"),
        (("ls", "--bogus"), "No such option '--bogus'"),
        (("nosuch",), "No such command 'nosuch'"),
    ],
)
def test_a_usage_error_is_one_line_and_status_1(args: tuple[str, ...], says: str) -> None:
    result = _run(*args)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and says in line and "--help" in line
    assert result.stdout == ""


def test_a_group_alone_prints_its_help() -> None:
    result = _run("config")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ") and "show" in result.stdout


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf"])
def test_top_refuses_an_interval_that_is_no_positive_number(interval: str) -> None:
    """nan passed 'interval <= 0' and then no probe was ever due again."""
    result = _run("--etcd", "127.0.0.1:1", "top", "a.b", "--interval", interval)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: --interval must be a number of seconds > 0, got "), line
