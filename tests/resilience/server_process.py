"""Echo servers in their own processes (``benchmarks/chaos_server.py``), for signals and kills."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "chaos_server.py"
SERVICE = "test.srv.echo"


class ServerProcess:
    """``chaos_server.py --name NAME`` registered in ``etcd``; ``address`` once it is ready."""

    def __init__(self, etcd: str, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--etcd", etcd, "--name", name, *args],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        line = self.read_line(15)
        if not line.startswith("ready "):
            self.kill()
            raise AssertionError(f"server {name} did not start: {line!r}")
        _, self.address, self.key = line.split()

    def read_line(self, timeout: float) -> str:
        """The next line the server prints ("" if none within ``timeout``)."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.proc.stdout.readline().strip()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)
