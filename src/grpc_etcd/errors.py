"""Every public exception of grpc-etcd, in one place.

``GrpcEtcdError`` is the base of them all. The etcd client's errors (``EtcdError`` and its
subclasses) are defined here too and re-exported by ``grpc_etcd.registry.etcd``; the service
config's ``ConfigError`` lives here as well.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthError",
    "ClosedError",
    "CompactedError",
    "ConfigError",
    "DuplicateRegistrationError",
    "EtcdClientClosedError",
    "EtcdError",
    "EtcdUnavailableError",
    "GrpcEtcdError",
    "LeaseNotFoundError",
    "RecordError",
]


class GrpcEtcdError(Exception):
    """Base class of grpc-etcd's own exceptions."""


class RecordError(GrpcEtcdError, ValueError):
    """A registry record that cannot be decoded; ``key`` names where it was read."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"bad registry record at {key or '<no key>'}: {reason}")


class ConfigError(GrpcEtcdError, ValueError):
    """A service config that does not validate; ``key`` names where it was read (may be empty),
    ``reason`` where in the document the fault is and what it is."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f" at {key}" if key else ""
        super().__init__(f"bad service config{where}: {reason}")


class ClosedError(GrpcEtcdError, RuntimeError):
    """Used after close: ``what`` names the closed object (``"the etcd client"``,
    ``"registration /hwholiday/srv/app/app-1"``, ``"this Registry"``)."""

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        super().__init__(f"{what} is closed{f' ({detail})' if detail else ''}")


class EtcdError(GrpcEtcdError):
    """Base class of the etcd client's errors; the message names the endpoint(s) involved.

    ``endpoints`` holds the endpoint(s) the failed request went to (empty if none was tried).
    No raw ``grpc.RpcError`` ever escapes the client: gRPC failures are mapped to this class or
    one of its subclasses; ``code`` keeps the gRPC status code name (``"UNAVAILABLE"``, ...) when
    the error came from a gRPC status, else ``None``.
    """

    def __init__(
        self, message: str, *, endpoints: Sequence[str] = (), code: str | None = None
    ) -> None:
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.code = code
        where = ", ".join(self.endpoints)
        super().__init__(f"{message} [etcd {where}]" if where else message)


class EtcdUnavailableError(EtcdError):
    """No endpoint answered within the timeout (down, unreachable, no leader, timed out).

    For a write (put/delete/txn) it may also mean that the request reached etcd but the answer
    was lost: the message then says that the write may or may not have been applied.
    """


class CompactedError(EtcdError):
    """The revision a watch (or read) needs has been compacted away.

    ``compact_revision`` is the oldest revision etcd still has (watch again from it, or better,
    read again and watch from the read's revision + 1); ``0`` when etcd did not say.

    Also raised by a watch that finds etcd's revision went *backwards* (etcd restarted with its
    data wiped): the history the watch needs is gone just the same, and the caller must re-read.
    """

    def __init__(
        self,
        message: str,
        *,
        compact_revision: int,
        endpoints: Sequence[str] = (),
        code: str | None = None,
    ) -> None:
        self.compact_revision = compact_revision
        super().__init__(message, endpoints=endpoints, code=code)


class LeaseNotFoundError(EtcdError):
    """The lease does not exist (never granted, revoked or expired)."""

    def __init__(
        self, message: str, *, lease_id: int, endpoints: Sequence[str] = (), code: str | None = None
    ) -> None:
        self.lease_id = lease_id
        super().__init__(message, endpoints=endpoints, code=code)


class AuthError(EtcdError):
    """Bad user name or password, or the user lacks the permission for the request.

    When the refused request is known, the message names it (``cannot put /a/srv/b/x:
    permission denied for user srv``) and so do ``operation`` (``"put"``, ``"read"``,
    ``"watch"``, ...) and ``key`` (the key or prefix; None when the request has none);
    ``user`` is the etcd user the client authenticated as (None: no credentials).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoints: Sequence[str] = (),
        code: str | None = None,
        operation: str | None = None,
        key: str | None = None,
        user: str | None = None,
    ) -> None:
        self.operation = operation
        self.key = key
        self.user = user
        super().__init__(message, endpoints=endpoints, code=code)


class EtcdClientClosedError(EtcdError, ClosedError):
    """The etcd client was closed (before or during the request)."""

    def __init__(self, detail: str = "", *, endpoints: Sequence[str] = ()) -> None:
        self.what = "the etcd client"
        self.endpoints = tuple(endpoints)
        self.code = None
        where = f" [etcd {', '.join(self.endpoints)}]" if self.endpoints else ""
        # both bases format a message of their own: build it once, here
        GrpcEtcdError.__init__(
            self, f"the etcd client is closed{f' ({detail})' if detail else ''}{where}"
        )


class DuplicateRegistrationError(GrpcEtcdError, ValueError):
    """Another live registration holds the key (the same service and ``instance_id``)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"{key} is already registered by another live lease; choose another instance_id, "
            "or close the other registration first"
        )
