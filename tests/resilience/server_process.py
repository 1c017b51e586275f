"""Echo servers in their own processes (``benchmarks/chaos_server.py``), for signals and kills."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
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
        # A thread reads the lines: a selector on the pipe misses lines the text buffer holds.
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.read_line(15)
        if not line.startswith("ready "):
            self.kill()
            raise AssertionError(f"server {name} did not start: {line!r}")
        _, self.address, self.key = line.split()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def read_line(self, timeout: float) -> str:
        """The next line the server prints ("" if none within ``timeout``)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return ""

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)
