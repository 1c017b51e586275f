"""Running ``grpc-etcd`` as a user does: in its own process, its output read line by line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

CLI = [sys.executable, "-m", "grpc_etcd.cli"]
#: A stop takes well under a second alone; the bound is for a machine busy with other suites.
STOP_TIMEOUT = 30.0


class CliProcess:
    """``grpc-etcd ARGS`` in a subprocess; ``line()`` waits (bounded) for its next stdout line."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )
        self._out: queue.Queue[str] = queue.Queue()
        self._err: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, lines in ((self.proc.stdout, self._out), (self.proc.stderr, self._err)):
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()

    def line(self, timeout: float = 15.0) -> str:
        """The next line on stdout (without its newline); fails after ``timeout`` seconds."""
        try:
            return self._out.get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            raise AssertionError(
                f"no output line within {timeout} s; stderr: {self.stderr_lines()}"
            ) from None

    def err_line(self, timeout: float = 15.0) -> str:
        """The next line on stderr; fails after ``timeout`` seconds."""
        try:
            return self._err.get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            raise AssertionError(f"no stderr line within {timeout} s") from None

    def stderr_lines(self) -> list[str]:
        """Every stderr line so far that was not taken by ``err_line``."""
        lines = []
        while not self._err.empty():
            lines.append(self._err.get().rstrip("\n"))
        return lines

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Send ``sig`` and return the exit status (killed after ``STOP_TIMEOUT`` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
