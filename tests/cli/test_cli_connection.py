"""How grpc-etcd reaches etcd: endpoints, credentials, TLS, and failing fast (real etcd)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import grpc_etcd
from grpc_etcd.cli import main
from grpc_etcd.testing import EtcdServer, TLSUnavailableError

Factory = Callable[..., EtcdServer]


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    return line


def test_a_refused_connection_fails_at_once() -> None:
    started = time.monotonic()
    result = _cli("--etcd", "127.0.0.1:1", "--timeout", "30", "ls")
    assert time.monotonic() - started < 5  # not the 30 s timeout
    line = _one_line_error(result)
    assert "127.0.0.1:1" in line and "connection refused" in line


@pytest.mark.parametrize("endpoint", ["not a host", "127.0.0.1:port", "127.0.0.1:70000", ","])
def test_a_malformed_endpoint_is_refused_before_dialing(endpoint: str) -> None:
    line = _one_line_error(_cli("--etcd", endpoint, "ls"))
    assert "malformed etcd endpoint" in line or "no etcd endpoint" in line


def test_user_and_password_from_options_or_environment(etcd_factory: Factory) -> None:
    etcd = etcd_factory(auth=("alice", "s3cret"))
    with grpc_etcd.Registry(etcd.endpoint, username="alice", password="s3cret") as registry:
        reg = registry.register("a.srv.app", address="127.0.0.1:5001")
        by_option = _cli("--etcd", etcd.endpoint, "--user", "alice", "--password", "s3cret", "ls")
        assert by_option.exit_code == 0 and reg.node.id in by_option.stdout, by_option.output
        by_env = _cli(
            "--etcd", etcd.endpoint, "--user", "alice", "ls", env={"GRPC_ETCD_PASSWORD": "s3cret"}
        )
        assert by_env.exit_code == 0 and reg.node.id in by_env.stdout, by_env.output
    assert "go together" in _one_line_error(_cli("--etcd", etcd.endpoint, "--user", "alice", "ls"))
    wrong = _cli("--etcd", etcd.endpoint, "--user", "alice", "--password", "nope", "ls")
    assert "authentication failed" in _one_line_error(wrong)


def test_mutual_tls_with_cacert_cert_and_key(etcd_factory: Factory) -> None:
    try:
        etcd = etcd_factory(tls="mutual")
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS here: {exc}")
    tls = ["--cacert", str(etcd.ca_file), "--cert", str(etcd.client_cert_file)]
    key = ["--key", str(etcd.client_key_file)]
    result = _cli("--etcd", etcd.url, *tls, *key, "ls")
    assert result.exit_code == 0, result.output
    assert "no nodes registered" in result.stderr
    assert "go together" in _one_line_error(_cli("--etcd", etcd.url, *tls, "ls"))


@pytest.mark.parametrize("flag", ["--cacert", "--cert", "--key"])
def test_a_tls_file_that_cannot_be_read_is_named_by_its_flag(flag: str, tmp_path: Path) -> None:
    """It was '[Errno 2] No such file or directory: ...', which named no option."""
    there = tmp_path / "there.pem"
    there.write_text("")
    files = {"--cacert": str(there), "--cert": str(there), "--key": str(there)}
    files[flag] = str(tmp_path / "typo.pem")
    args = [arg for pair in files.items() for arg in pair]
    line = _one_line_error(_cli("--etcd", "127.0.0.1:1", *args, "ls"))
    assert (
        line == f"Error: {flag} {tmp_path / 'typo.pem'}: cannot read it (No such file or directory)"
    )
