"""The README's demo command shows the seed's behaviour (run as a user would)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_demo_help_says_what_it_does_and_runs_nothing() -> None:
    """--help ran the whole demo (an etcd, two servers) and printed no help."""
    for args, code in ((["--help"], 0), (["--bogus"], 2)):
        result = subprocess.run(
            [sys.executable, "-m", "grpc_etcd.demo", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == code, result.stderr
        assert "started on" not in result.stdout
    help_text = subprocess.run(
        [sys.executable, "-m", "grpc_etcd.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert help_text.startswith("usage: python -m grpc_etcd.demo")
    assert "starts a throwaway etcd" in help_text


def test_demo_shows_the_seeds_behaviour() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "grpc_etcd.demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = [re.sub(r"^\[\s*[\d.]+s\] ", "", line) for line in out.splitlines()]

    def answer(label: str, nth: int = 0) -> str:
        found = [line.split("-> ", 1)[1] for line in lines if line.strip().startswith(label)]
        return found[nth]

    assert re.fullmatch(r"v1@127\.0\.0\.1:\d+", answer("route(version='v1')"))
    assert re.fullmatch(r"v2@127\.0\.0\.1:\d+", answer("metadata x-version: v2"))
    assert answer("route(version='v3')") == "UNAVAILABLE: no match found conn"
    no_version = {answer(f"no version #{i}").split("@")[0] for i in range(1, 5)}
    assert no_version <= {"v1", "v2"}
    assert "picked at random" in out
    # The table is grpc-etcd ls's, every column of it.
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["ID"])
    assert lines[header].split() == ["ID", "VERSION", "ADDRESS", "METADATA", "TTL"]
    assert lines[header - 1].startswith("$ grpc-etcd --etcd 127.0.0.1:")
    assert sorted(line.split()[1] for line in lines[header + 1 : header + 3]) == ["v1", "v2"]
    # After the v2 server stops cleanly: v2 has no match, v1 still answers.
    assert answer("metadata x-version: v2", 1) == "UNAVAILABLE: no match found conn"
    assert answer("route(version='v1')", 1).startswith("v1@")
    # After SIGKILL of v1, the watch removes it once its lease expires; then nothing matches.
    assert "v1 node removed after" in out
    assert answer("no version", 4) == "UNAVAILABLE: no match found conn"


def _make_dry_run(target: str, tmp_path: Path) -> str:
    """The commands ``make TARGET`` would run on a fresh clone (a .venv that does not exist)."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_make_demo_installs_the_runtime_only_and_make_test_the_dev_set(tmp_path: Path) -> None:
    """Issue 13: the demo needs the library and an etcd binary, not pytest, ruff or mypy."""
    if shutil.which("make") is None:  # pragma: no cover - CI and the README need make
        pytest.skip("no make here")
    demo = _make_dry_run("demo", tmp_path)
    assert "pip install --quiet -e '.[etcd]'" in demo
    assert "[dev]" not in demo and "grpc_etcd.demo" in demo
    assert "pip install --quiet -e '.[dev]'" in _make_dry_run("test", tmp_path)
