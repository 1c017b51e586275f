"""The errors ``grpc_etcd.testing`` raises."""

from __future__ import annotations

from ..errors import GrpcEtcdError

__all__ = [
    "EtcdNotFoundError",
    "EtcdServerError",
    "EtcdStartError",
    "EtcdctlError",
    "TLSUnavailableError",
]

_ADDRESS_IN_USE = "address already in use"


class EtcdServerError(GrpcEtcdError):
    """Base class of the errors raised by ``grpc_etcd.testing`` (alias: ``EtcdError``)."""


class EtcdNotFoundError(EtcdServerError, FileNotFoundError):
    """No etcd (or etcdctl) binary was found; the message says how to install one."""


class EtcdStartError(EtcdServerError):
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


class EtcdctlError(EtcdServerError):
    """An etcdctl command failed; ``returncode`` and ``stderr`` say how."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.command = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"etcdctl {' '.join(args)} failed (exit {returncode}): {stderr.strip()}")


class TLSUnavailableError(EtcdServerError):
    """TLS was asked for but neither the ``cryptography`` package nor ``openssl`` is available."""
