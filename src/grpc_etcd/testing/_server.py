"""One real etcd on loopback: ``EtcdServer``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._closing import OpenClosing
from ._binary import _etcd_env, _run_etcdctl, _version_of, find_etcd, find_etcdctl
from ._certs import TLSFiles, make_certs
from ._errors import _ADDRESS_IN_USE, EtcdServerError, EtcdStartError

__all__ = ["ELECTION_MS", "HEARTBEAT_MS", "EtcdServer", "TLSMode"]

log = logging.getLogger("grpc_etcd.testing")

#: Raft timers (ms) that make a fresh single member elect itself in ~0.1 s.
HEARTBEAT_MS = 10
ELECTION_MS = 100
#: tmpfs is used for data dirs only with this much free space: each member preallocates a
#: 64 MB WAL segment plus a 64 MB spare one, which on tmpfs is real memory.
_TMPFS_MIN_FREE = 1 << 30
_LOG_TAIL_LINES = 20
_START_ATTEMPTS = 5

#: ``EtcdServer(tls=...)``: False (plain text), True (TLS) or ``"mutual"`` (clients need a cert).
TLSMode = bool | Literal["mutual"]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (free when asked; someone may take them)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _make_temp_dir() -> Path:
    """A new private temp dir: on /dev/shm if writable with room, else tempfile's default."""
    shm = "/dev/shm"
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= _TMPFS_MIN_FREE:
            return Path(tempfile.mkdtemp(prefix="grpc-etcd-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="grpc-etcd-"))


def _spawn_logged(args: list[str], log_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``args`` (an etcd binary) with stdin closed and its output appended to
    ``log_file``: the process, and the offset in ``log_file`` where its output begins."""
    with log_file.open("ab") as logf:
        offset = logf.tell()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=_etcd_env(),
            close_fds=True,
        )
    return proc, offset


def _read_log(log_file: Path, offset: int, size: int = 1 << 16) -> str:
    """Up to ``size`` bytes of ``log_file`` from ``offset`` ("" when it cannot be read)."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


def _empty_dir(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@dataclass
class _Resources:
    """What a server owns, kept apart from it so that a finalizer can free it at GC or exit."""

    proc: subprocess.Popen[bytes] | None = None
    temp_dir: Path | None = None

    def release(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        temp_dir, self.temp_dir = self.temp_dir, None
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class _ClusterConfig:
    initial_cluster: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class EtcdServer(OpenClosing):
    """One real etcd on free 127.0.0.1 ports with a temporary data dir; a context manager.

    ``auth=(user, password)`` creates that user (and ``root``) with the root role and enables
    auth. ``tls=True`` serves https with a throwaway CA (``ca_file``); ``tls="mutual"`` also
    requires client certificates (``client_cert_file``, ``client_key_file``).
    ``client_port`` fixes the client port (default: a free one). A ``data_dir`` you pass is kept
    on exit; the server's own temp dir (log, certificates, default data dir) is removed.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        auth: tuple[str, str] | None = None,
        tls: TLSMode = False,
        name: str = "default",
        binary: str | os.PathLike[str] | None = None,
        client_port: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.auth = auth
        self.tls: TLSMode = tls
        self.start_timeout = start_timeout
        self.binary = find_etcd(binary)
        self.etcdctl_binary = find_etcdctl(self.binary)
        self.client_port = 0
        self.peer_port = 0
        self._fixed_client_port = client_port or 0
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._res = _Resources()
        self._temp_path: Path | None = None
        self._finalizer = weakref.finalize(self, _Resources.release, self._res)
        self._tls_files: TLSFiles | None = None
        self._cluster: _ClusterConfig | None = None
        self._log_offset = 0
        self._opener_cache: urllib.request.OpenerDirector | None = None

    # ---- addresses and files

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``, the client address to give to a registry or grpc channel."""
        if not self.client_port:
            raise EtcdServerError("the server has not been started yet")
        return f"127.0.0.1:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        """``[self.endpoint]``, for APIs that take a list."""
        return [self.endpoint]

    @property
    def version(self) -> str:
        """The version of the etcd binary, e.g. ``"3.5.1"``."""
        return _version_of(str(self.binary))

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, else ``"http"``."""
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """The client URL, e.g. ``"http://127.0.0.1:PORT"``."""
        return f"{self.scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """The peer (raft) URL; peers always talk plain http."""
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """The etcd process id while it runs, else ``None``."""
        proc = self._res.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the etcd process is alive (not necessarily healthy)."""
        return self.pid is not None

    @property
    def temp_dir(self) -> Path:
        """The server's own temp dir (log, certs, and data unless ``data_dir`` was given)."""
        if self._temp_path is None:
            if not self._finalizer.alive:
                raise EtcdServerError(f"etcd {self.name} was closed")
            self._temp_path = self._res.temp_dir = _make_temp_dir()
        return self._temp_path

    @property
    def data_dir(self) -> Path:
        """etcd's ``--data-dir``."""
        return self._data_dir if self._data_dir is not None else self.temp_dir / "data"

    @property
    def log_file(self) -> Path:
        """The file etcd's stdout and stderr go to (appended to across restarts)."""
        return self.temp_dir / "etcd.log"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate that signed the server's (and client's) certificate, with TLS."""
        return self._tls().ca if self.tls else None

    @property
    def client_cert_file(self) -> Path | None:
        """A client certificate signed by ``ca_file`` (needed with ``tls="mutual"``)."""
        return self._tls().client_cert if self.tls else None

    @property
    def client_key_file(self) -> Path | None:
        """The private key of ``client_cert_file``."""
        return self._tls().client_key if self.tls else None

    def _tls(self) -> TLSFiles:
        if self._tls_files is None:
            self._tls_files = make_certs(self.temp_dir / "tls")
        return self._tls_files

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines etcd wrote since it was last started."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(self._log_offset, f.seek(0, os.SEEK_END) - 200 * lines * 5))
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _log_head(self, size: int = 1 << 16) -> str:
        """The start of what etcd wrote since it was last started (where bind errors are)."""
        return _read_log(self.log_file, self._log_offset, size)

    # ---- life cycle

    def _open(self) -> None:  # what ``with`` starts
        self.start()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        where = f"127.0.0.1:{self.client_port}" if self.client_port else "not started"
        return f"<EtcdServer {self.name} {where} {state}>"

    def start(self, timeout: float | None = None) -> None:
        """Start etcd (again) and wait until it is healthy; a no-op while it runs.

        The first start picks free ports (and picks again if etcd finds one taken); later starts
        reuse the same ports and data. On a fresh data dir, sets up ``auth`` if asked.
        """
        if self.running:
            return
        if not self._finalizer.alive:
            raise EtcdServerError(f"etcd {self.name} was closed; make a new EtcdServer")
        timeout = self.start_timeout if timeout is None else timeout
        fresh = not (self.data_dir / "member").exists()
        pick_ports = not self.client_port
        for attempt in range(1, _START_ATTEMPTS + 1):
            if pick_ports:
                self.client_port, self.peer_port = _free_ports(2)
                self.client_port = self._fixed_client_port or self.client_port
            self._spawn()
            try:
                self.wait_healthy(timeout)
                break
            except EtcdStartError as exc:
                self.kill()
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise
                log.warning("etcd %s: port taken, starting again (attempt %d)", self.name, attempt)
                if fresh:
                    _empty_dir(self.data_dir)
                if not pick_ports:
                    time.sleep(0.2)  # someone holds our fixed port: give them a moment
        if fresh and self.auth is not None:
            self._enable_auth()

    def _spawn(self) -> None:
        """Start the etcd process without waiting for it to be healthy."""
        if self.tls:
            self._tls()
        cluster = self._cluster or _ClusterConfig(f"{self.name}={self.peer_url}")
        args = [
            str(self.binary),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", cluster.token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
        ]  # fmt: skip
        if self.tls:
            tls = self._tls()
            args += ["--cert-file", str(tls.server_cert), "--key-file", str(tls.server_key)]
            if self.tls == "mutual":  # etcd asks for client certs whenever it has a trusted CA
                args += ["--client-cert-auth", "--trusted-ca-file", str(tls.ca)]
        log_path = self.log_file
        self._res.proc, self._log_offset = _spawn_logged(args, log_path)
        log.debug(
            "etcd %s: started pid %d on %s, log %s",
            self.name,
            self._res.proc.pid,
            self.url,
            log_path,
        )

    def _opener(self) -> urllib.request.OpenerDirector:
        if self._opener_cache is None:
            self._opener_cache = self._build_opener()
        return self._opener_cache

    def _build_opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if self.tls:
            tls = self._tls()
            ctx = ssl.create_default_context(cafile=str(tls.ca))
            if self.tls == "mutual":
                ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        return urllib.request.build_opener(*handlers)

    def _http_json(self, path: str, body: bytes | None = None, timeout: float = 0.5) -> Any:
        with self._opener().open(self.url + path, data=body, timeout=timeout) as resp:
            return json.loads(resp.read())

    def healthy(self) -> bool:
        """Whether ``GET /health`` answers ``{"health": "true"}`` right now."""
        try:
            return bool(self._http_json("/health").get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until ``/health`` is true; raise ``EtcdStartError`` if etcd exits or times out."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            proc = self._res.proc
            if proc is None:
                raise EtcdStartError(f"etcd {self.name} is not running")
            code = proc.poll()
            if code is not None:
                raise EtcdStartError(
                    f"etcd {self.name} exited with code {code} while starting on {self.url}",
                    log_tail=self.log_tail(),
                )
            if _ADDRESS_IN_USE in self._log_head():  # fail fast: etcd takes ~1 s to exit,
                # and whoever holds the port may not answer our health check
                raise EtcdStartError(f"etcd {self.name}: a port is taken", log_tail=self.log_tail())
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise EtcdStartError(
                    f"etcd {self.name} on {self.url} was not healthy within {timeout:.1f} s",
                    log_tail=self.log_tail(),
                )
            time.sleep(0.01)

    def status(self) -> dict[str, Any]:
        """This member's ``Maintenance.Status`` (via the HTTP gateway; ids are strings)."""
        result: dict[str, Any] = self._http_json("/v3/maintenance/status", b"{}")
        return result

    def stop(self, grace: float = 5.0) -> None:
        """Stop etcd: SIGTERM, then SIGKILL after ``grace`` seconds. Data and ports are kept."""
        proc, self._res.proc = self._res.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "etcd %s (pid %d) ignored SIGTERM for %.1f s; killing it",
                    self.name,
                    proc.pid,
                    grace,
                )
                proc.kill()
                proc.wait()
        log.debug("etcd %s: stopped (exit %s)", self.name, proc.returncode)

    def kill(self) -> None:
        """Kill etcd at once (SIGKILL), as a crash would. Data and ports are kept."""
        proc, self._res.proc = self._res.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, wipe: bool = False, timeout: float | None = None) -> None:
        """Stop and start again on the same ports; ``wipe=True`` starts with no keys or leases."""
        self.stop()
        if wipe:
            _empty_dir(self.data_dir)
        self.start(timeout)

    def close(self) -> None:
        """Stop etcd and remove the server's temp dir (a ``data_dir`` you passed is kept)."""
        self.stop()
        self._finalizer()

    # ---- etcdctl

    def etcdctl_flags(self, use_auth: bool = True) -> list[str]:
        """The etcdctl flags (besides ``--endpoints``) for this server's auth and TLS."""
        flags: list[str] = []
        if use_auth and self.auth is not None:
            flags.append(f"--user={self.auth[0]}:{self.auth[1]}")
        if self.tls:
            tls = self._tls()
            flags.append(f"--cacert={tls.ca}")
            if self.tls == "mutual":
                flags += [f"--cert={tls.client_cert}", f"--key={tls.client_key}"]
        return flags

    def etcdctl(self, *args: str, use_auth: bool = True, timeout: float = 30.0) -> str:
        """Run ``etcdctl ARGS`` against this server and return its stdout.

        Auth and TLS flags are filled in (``use_auth=False`` leaves out the credentials).
        Raises ``EtcdctlError`` (with etcdctl's stderr) when it exits non-zero.
        """
        return _run_etcdctl(
            self.etcdctl_binary, [self.url], self.etcdctl_flags(use_auth), args, timeout
        )

    def _enable_auth(self) -> None:
        assert self.auth is not None
        user, password = self.auth
        for name in dict.fromkeys(("root", user)):
            self.etcdctl("user", "add", f"{name}:{password}", use_auth=False)
            self.etcdctl("user", "grant-role", name, "root", use_auth=False)
        self.etcdctl("auth", "enable", use_auth=False)
        log.debug("etcd %s: auth enabled for user %s", self.name, user)
