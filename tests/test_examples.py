"""The examples run as written: each server with each client, through a real etcd."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grpc_etcd.testing import EtcdServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_server_and_client_examples(etcd: EtcdServer, kind: str) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / f"{kind}_server.py"),
            "--etcd",
            etcd.endpoint,
            "--version",
            "v5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("registered /hwholiday/srv/app/app-")
        for client in ("sync", "aio"):

            def run(version: str, client: str = client) -> str:
                return subprocess.run(
                    [
                        sys.executable,
                        str(EXAMPLES / f"{client}_client.py"),
                        "--etcd",
                        etcd.endpoint,
                        "--version",
                        version,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout.strip()

            assert run("v5") == "hello from v5"
            assert run("v6") == "UNAVAILABLE: no match found conn"
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
        assert server.returncode == 0, err
    # serve() says what it does on SIGTERM, though the example configures no logging.
    said = [line.split("grpc_etcd.serve: ", 1)[-1] for line in err.splitlines()]
    assert any(line.startswith("draining: NOT_SERVING, deregistering /hwholiday") for line in said)
    assert said[-1].startswith("stopped: drained in "), err
    assert etcd.etcdctl("get", "--prefix", "/hwholiday/srv/app/", "--keys-only").strip() == ""
