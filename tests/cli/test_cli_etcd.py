"""grpc-etcd etcd: a local etcd on the port clients dial by default, restartable on its data."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import CliProcess
from click.testing import CliRunner

from grpc_etcd.cli import main
from grpc_etcd.cli._etcd import PREFERRED_PORT, choose_port
from grpc_etcd.registry.etcd import EtcdClient


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def _held(port: int) -> Iterator[bool]:
    """Hold 127.0.0.1:``port`` (bound, not listening: dialers are refused); False if taken."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            yield False  # someone else holds it: taken all the same
            return
        yield True


def _endpoint(listening_line: str) -> str:
    assert "listening on 127.0.0.1:" in listening_line, listening_line
    return listening_line.split("listening on ")[1].split()[0]


def test_restarts_on_its_data_dir(tmp_path: Path) -> None:
    port, data = _free_port(), tmp_path / "etcd-data"
    with CliProcess(["etcd", "--port", str(port), "--data-dir", str(data)]) as cli:
        first = cli.line()
        assert _endpoint(first) == f"127.0.0.1:{port}" and f"data in {data}, kept" in first
        with EtcdClient(f"127.0.0.1:{port}") as client:
            client.put("/kept", "yes")
        assert cli.stop() == 0
    with CliProcess(["etcd", "--port", str(port), "--data-dir", str(data)]) as cli:
        _endpoint(cli.line())
        with EtcdClient(f"127.0.0.1:{port}") as client:
            kv = client.get("/kept")
            assert kv is not None and kv.value == b"yes"
        assert cli.stop() == 0


def test_says_which_port_it_took_when_2379_is_taken() -> None:
    with _held(PREFERRED_PORT), CliProcess(["etcd"]) as cli:
        notice = cli.err_line()
        assert notice.startswith(f"127.0.0.1:{PREFERRED_PORT} is taken")
        endpoint = _endpoint(cli.line())
        assert endpoint != f"127.0.0.1:{PREFERRED_PORT}"
        assert f"GRPC_ETCD_ENDPOINTS={endpoint}" in notice
        assert f"GRPC_ETCD_ENDPOINTS={endpoint} grpc-etcd ls" in cli.line()
        assert cli.stop() == 0


def test_prefers_its_port_when_free() -> None:
    port = _free_port()
    assert choose_port(None, preferred=port) == (port, None)


def test_an_explicit_port_that_is_taken_is_an_error() -> None:
    port = _free_port()
    with _held(port):
        with pytest.raises(ValueError, match="is taken; choose another --port"):
            choose_port(port)
        result = CliRunner().invoke(main, ["etcd", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: 127.0.0.1:{port} is taken; choose another --port"
