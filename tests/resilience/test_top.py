"""``grpc-etcd top`` as a user sees it: in a real terminal (tmux), following the watch, q quits."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from server_process import SERVICE, ServerProcess
from waiting import wait_for

import grpc_etcd
from grpc_etcd.cli._top import HEADER, NodeView, top_rows
from grpc_etcd.node import Node
from grpc_etcd.testing import EtcdServer

CLI = Path(sys.executable).with_name("grpc-etcd")


def test_rows_are_sorted_and_formatted() -> None:
    old = NodeView(Node(SERVICE, "b", "127.0.0.1:2", "v1"), ttl=9, health="SERVING", rtt=0.0012)
    new = NodeView(Node(SERVICE, "a", "127.0.0.1:1", "v2"), conn="CONNECTING")
    assert top_rows([new, old]) == [
        ("b", "v1", "127.0.0.1:2", "9s", "SERVING", "IDLE", "1.2 ms"),
        ("a", "v2", "127.0.0.1:1", "-", "-", "CONNECTING", "-"),
    ]


class Tmux:
    """A private tmux server (its own socket) running one command in a 150x30 pane."""

    def __init__(self, command: str) -> None:
        self.socket = f"grpc-etcd-top-{os.getpid()}"
        # After the command ends, the pane shows its exit status and waits (so we can read it).
        shell = f"{command}; echo EXIT=$?; read _"
        self._tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "30", shell)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux_factory() -> Iterator[type[Tmux]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    made: list[Tmux] = []

    class Made(Tmux):
        def __init__(self, command: str) -> None:
            super().__init__(command)
            made.append(self)

    yield Made
    for each in made:
        each.close()


def test_top_follows_nodes_and_q_quits(etcd: EtcdServer, tmux_factory: type[Tmux]) -> None:
    healthy = ServerProcess(etcd.endpoint, "with-health")
    plain = grpc.server(futures.ThreadPoolExecutor(2))
    plain_address = f"127.0.0.1:{plain.add_insecure_port('127.0.0.1:0')}"
    plain.start()
    try:
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            registry.register(SERVICE, address=plain_address, version="v2", instance_id="no-health")
            command = shlex.join([str(CLI), "--etcd", etcd.endpoint, "top", SERVICE])
            term = tmux_factory(command)

            def shows(*texts: str) -> bool:
                screen = term.screen()
                return all(text in screen for text in texts)

            try:
                wait_for(
                    lambda: (
                        shows("2 nodes", "with-health", "SERVING", "no-health", "no health")
                        and term.screen().count("READY") == 2
                    ),
                    15,
                    "both nodes, their health and READY connections on screen",
                )
            except AssertionError:
                print(term.screen())
                raise
            assert "q quits" in term.screen()
            healthy.terminate()
            wait_for(lambda: shows("1 nodes") and "with-health" not in term.screen(), 15, "drain")
            term.keys("q")
            wait_for(lambda: shows("EXIT=0"), 10, "top to quit on q with status 0")
    finally:
        healthy.kill()
        plain.stop(None)


def test_top_with_no_terminal_prints_the_table_once_and_exits(etcd: EtcdServer) -> None:
    """Piped (a script, `| grep`), top printed nothing until Ctrl-C, then rich's last frame cut
    to 80 columns; killed, nothing at all. Now: the nodes probed once, as plain text, exit 0."""
    healthy = ServerProcess(etcd.endpoint, "with-health")
    try:
        result = subprocess.run(
            [str(CLI), "--etcd", etcd.endpoint, "top", SERVICE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        title, header, row, *rest = result.stdout.splitlines()
        assert title.startswith(f"{SERVICE}: 1 nodes (rev ") and rest == [], result.stdout
        assert header.split() == list(HEADER)
        assert row.split()[0] == healthy.key.rsplit("/", 1)[1], row
        assert "SERVING" in row.split() and "READY" in row.split(), row
    finally:
        healthy.kill()
