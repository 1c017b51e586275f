"""Echo servers in their own processes (``benchmarks/chaos_server.py``), for signals and kills."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent import futures
from pathlib import Path
from types import TracebackType

import grpc

from grpc_etcd.demo import api_pb2, api_pb2_grpc

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "chaos_server.py"
SERVICE = "test.srv.echo"


def who(reply: api_pb2.Response) -> str:
    """The name of the server that answered (``chaos_server.py`` prints it before ``|``)."""
    return str(reply.output.split("|")[0])


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


class Load:
    """``workers`` threads calling ``ApiTest`` on ``channel`` until the block ends.

    ``answered`` counts replies by server name; ``failures`` lists the calls that failed.
    """

    def __init__(self, channel: grpc.Channel, workers: int = 4) -> None:
        self.answered: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        self._stop = threading.Event()
        self._pool = futures.ThreadPoolExecutor(workers)
        self._workers = [self._pool.submit(self._call) for _ in range(workers)]

    def _call(self) -> None:
        while not self._stop.is_set():
            try:
                # wait_for_ready: a call picked onto a dead server's connection
                # must fail over, not wait for that connection until its deadline.
                request = api_pb2.Request(input="x")
                reply = self._stub.ApiTest(request, timeout=5, wait_for_ready=True)
                self.answered[who(reply)] += 1
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]

    def __enter__(self) -> Load:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._pool.shutdown()
        for worker in self._workers:
            worker.result()
