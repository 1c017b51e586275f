"""etcd's own gRPC proxy (``etcd grpc-proxy start``) on loopback: ``EtcdGrpcProxy``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path

from .._closing import OpenClosing
from ._binary import find_etcd
from ._errors import _ADDRESS_IN_USE, EtcdServerError, EtcdStartError
from ._server import _free_ports, _make_temp_dir, _read_log, _spawn_logged

__all__ = ["EtcdGrpcProxy"]

log = logging.getLogger("grpc_etcd.testing")

_START_ATTEMPTS = 5


class _Process:
    """The proxy process and its temp dir, freed by a finalizer at GC or exit too."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.temp_dir: Path | None = None

    def stop(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # our own child, by its PID
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def release(self) -> None:
        self.stop()
        temp_dir, self.temp_dir = self.temp_dir, None
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


class EtcdGrpcProxy(OpenClosing):
    """etcd's gRPC proxy in front of ``endpoints`` (plain http etcd on loopback), listening on
    a free 127.0.0.1 port; a context manager::

        with EtcdServer() as etcd, EtcdGrpcProxy(etcd.endpoint) as proxy:
            registry = grpc_etcd.Registry(proxy.endpoint)

    The proxy coalesces the watches of its clients on the same key range into one watch on
    etcd and passes everything else through (leases and their keep-alives, transactions).
    It is the same etcd binary (``find_etcd``); only this object's own process is stopped.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.binary = find_etcd(binary)
        self.start_timeout = start_timeout
        self.port = 0
        self._res = _Process()
        self._finalizer = weakref.finalize(self, _Process.release, self._res)

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``: give it to a registry in place of etcd's."""
        if not self.port:
            raise EtcdServerError("the proxy has not been started yet")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The proxy's process id while it runs, else ``None``."""
        proc = self._res.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def log_file(self) -> Path:
        """Where the proxy's output goes."""
        return self._temp_dir() / "grpc-proxy.log"

    def _temp_dir(self) -> Path:
        if self._res.temp_dir is None:
            self._res.temp_dir = _make_temp_dir()
        return self._res.temp_dir

    def _open(self) -> None:
        self.start()

    def start(self) -> None:
        """Start the proxy on a free port and wait until it answers ``/health``."""
        if self.pid is not None:
            return
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = self.port or _free_ports(1)[0]
            offset = self._spawn()
            try:
                self._wait_healthy(offset)
                return
            except EtcdStartError as exc:
                self._res.stop()
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise
                self.port = 0  # taken meanwhile: another one
        raise AssertionError("unreachable")

    def _spawn(self) -> int:
        """Start the proxy; the offset in its log where its output begins."""
        args = [
            str(self.binary),
            "grpc-proxy",
            "start",
            "--endpoints",
            ",".join(self.endpoints),
            "--listen-addr",
            self.endpoint,
            "--advertise-client-url",
            self.endpoint,
            "--data-dir",
            str(self._temp_dir() / "data"),
        ]
        self._res.proc, offset = _spawn_logged(args, self.log_file)
        log.debug("grpc-proxy: started pid %d on %s", self._res.proc.pid, self.endpoint)
        return offset

    def _wait_healthy(self, offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            proc = self._res.proc
            if proc is None or proc.poll() is not None:
                raise EtcdStartError(
                    f"etcd grpc-proxy exited while starting on {self.endpoint}",
                    log_tail=self._tail(offset),
                )
            if _ADDRESS_IN_USE in _read_log(self.log_file, offset):
                raise EtcdStartError("grpc-proxy: the port is taken", log_tail=self._tail(offset))
            if self._healthy(opener):
                return
            if time.monotonic() > deadline:
                raise EtcdStartError(
                    f"etcd grpc-proxy on {self.endpoint} was not healthy within "
                    f"{self.start_timeout:.1f} s",
                    log_tail=self._tail(offset),
                )
            time.sleep(0.01)

    def _healthy(self, opener: urllib.request.OpenerDirector) -> bool:
        with (
            contextlib.suppress(OSError, ValueError, urllib.error.URLError),
            opener.open(f"http://{self.endpoint}/health", timeout=0.5) as reply,
        ):
            return b'"health":"true"' in reply.read()
        return False

    def _tail(self, offset: int, lines: int = 20) -> str:
        return "\n".join(_read_log(self.log_file, offset).splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the proxy (SIGTERM, then SIGKILL after 5 s); ``start()`` starts it again."""
        self._res.stop()

    def close(self) -> None:
        """Stop the proxy and remove its temp dir."""
        self._finalizer()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.pid else "stopped"
        return f"<EtcdGrpcProxy {self.endpoint if self.port else 'not started'} {state}>"
