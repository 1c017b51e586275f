"""What a failed etcd request means, and what to do next (pure: no grpc, no asyncio).

``Session.call`` does the I/O (wait for a channel, send, sleep) and asks :class:`Attempts`
after each failure whether to authenticate again, try the next endpoint, count the request as
done, or give up with which error. The same module turns etcd's statuses into our exceptions,
so a refusal names the operation, the key and the user (``cannot put /a/srv/b/x: permission
denied for user srv``) instead of etcd's bare "permission denied".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from grpc_etcd.backoff import Backoff

from ._types import (
    AuthError,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    LeaseNotFoundError,
)

__all__ = [
    "Attempts",
    "Decision",
    "ErrorKind",
    "Op",
    "Step",
    "classify_status",
    "error_for",
    "key_text",
    "not_sent",
    "refused",
]

CALL_BACKOFF_BASE = 0.05
CALL_BACKOFF_CAP = 0.25


class ErrorKind(enum.Enum):
    """What a gRPC status from etcd means to the client."""

    TRANSIENT = "transient"  #: endpoint down/unreachable/no leader/overloaded: try another
    TIMEOUT = "timeout"  #: our deadline passed
    STALE_TOKEN = "stale_token"  #: auth token missing/invalid/outdated: authenticate again
    FATAL = "fatal"  #: anything else: map and raise


_STALE_TOKEN_MARKERS = (
    "invalid auth token",
    "user name is empty",
    "revision of auth store is old",
)

# UNAVAILABLE details that prove the request never reached etcd's KV/lease/... handlers, so
# even a write may be retried on another endpoint.
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "connection refused",
    "connections to all backends failing",
    "etcdserver: no leader",  # refused by the require-leader interceptor, before handling
    "etcdserver: not capable",
    "etcdserver: too many requests",
)

_BAD_PASSWORD_MARKERS = ("authentication failed", "invalid user id or password")


def classify_status(code: str, details: str) -> ErrorKind:
    """The kind of a gRPC status (``code`` its name, ``"UNAVAILABLE"``, ...)."""
    lowered = details.lower()
    if code == "UNAUTHENTICATED" or (
        code == "INVALID_ARGUMENT" and any(m in lowered for m in _STALE_TOKEN_MARKERS)
    ):
        return ErrorKind.STALE_TOKEN
    if code == "UNAVAILABLE":
        return ErrorKind.TRANSIENT
    if code == "RESOURCE_EXHAUSTED" and "too many requests" in lowered:
        return ErrorKind.TRANSIENT
    if code == "DEADLINE_EXCEEDED":
        return ErrorKind.TIMEOUT
    return ErrorKind.FATAL


def not_sent(details: str) -> bool:
    """True if a request that failed with these details certainly was not applied by etcd."""
    lowered = details.lower()
    return any(m in lowered for m in _NOT_SENT_MARKERS)


def key_text(key: bytes) -> str:
    """A key as messages show it: UTF-8, with undecodable bytes and unprintable characters
    escaped (``\\xff``, ``\\n``), so a message stays one line whatever the key."""
    text = key.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True, slots=True)
class Op:
    """What one request does, for the errors that refuse it: ``verb`` (``"put"``, ``"read"``,
    ``"delete"``, ``"watch"``, ``"revoke"``, ...), the ``key`` it touches (empty: none) and
    whether it covers every key under ``key`` (``prefix``)."""

    verb: str
    key: bytes = b""
    prefix: bool = False
    #: set for lease requests: the lease id, shown in the message
    lease_id: int = 0

    @property
    def target(self) -> str:
        """The key as the message shows it (``/a/b/`` for a prefix, ``""`` without a key)."""
        return key_text(self.key) if self.key else ""

    def describe(self) -> str:
        """``put /a/srv/b/x``, ``read the keys under /a/srv/b/``, ``revoke lease 0x1f``."""
        if self.lease_id and not self.key:
            return f"{self.verb} lease {self.lease_id:#x}"
        if self.prefix and self.key in (b"", b"\0"):
            return f"{self.verb} every key"
        if not self.key:
            return self.verb
        if self.prefix:
            return f"{self.verb} the keys under {self.target}"
        return f"{self.verb} {self.target}"


def refused(
    op: Op | None, user: str | None, reason: str, *, endpoints: Sequence[str], code: str | None
) -> AuthError:
    """The ``AuthError`` of a request etcd refused, naming what was refused and for whom
    (``reason``: etcd's own words, ``etcdserver: permission denied``). Without ``op`` the
    message is etcd's status, as it was before requests were named."""
    lowered = reason.lower()
    if user and any(m in lowered for m in _BAD_PASSWORD_MARKERS):
        message = f"authentication failed for user {user}: wrong user name or password"
        return AuthError(message, endpoints=endpoints, code=code, user=user)
    if op is None:
        return AuthError(f"{code}: {reason}", endpoints=endpoints, code=code, user=user)
    if "user name is empty" in lowered:
        why = "etcd has auth enabled and no user name and password were given"
    elif "permission denied" in lowered:
        why = f"permission denied for user {user}" if user else "permission denied"
    else:
        why = reason.removeprefix("etcdserver: ")
    return AuthError(
        f"cannot {op.describe()}: {why}",
        endpoints=endpoints,
        code=code,
        operation=op.verb,
        key=op.target or None,
        user=user,
    )


def error_for(
    code: str,
    details: str,
    endpoint: str,
    *,
    lease_id: int = 0,
    op: Op | None = None,
    user: str | None = None,
) -> EtcdError:
    """Our exception for a gRPC status that is not retried (``code`` its name)."""
    lowered = details.lower()
    message = f"{code}: {details}"
    eps = (endpoint,)
    if code == "NOT_FOUND" and "lease not found" in lowered:
        return LeaseNotFoundError(message, lease_id=lease_id, endpoints=eps, code=code)
    if code == "OUT_OF_RANGE" and "compacted" in lowered:
        return CompactedError(message, compact_revision=0, endpoints=eps, code=code)
    if (
        code in ("PERMISSION_DENIED", "UNAUTHENTICATED")
        or any(m in lowered for m in _BAD_PASSWORD_MARKERS)
        or any(m in lowered for m in _STALE_TOKEN_MARKERS)
    ):
        return refused(op, user, details, endpoints=eps, code=code)
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return EtcdUnavailableError(message, endpoints=eps, code=code)
    return EtcdError(message, endpoints=eps, code=code)


class Step(enum.Enum):
    """What ``Session.call`` does after a failed attempt."""

    REAUTHENTICATE = "reauthenticate"  #: drop the token, authenticate, same endpoint again
    NEXT_ENDPOINT = "next endpoint"  #: try the next endpoint (after a full pass: back off)
    DONE = "done"  #: an earlier attempt was applied: answer with an empty response
    RAISE = "raise"  #: give up with ``Decision.error``


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of :meth:`Attempts.failed`."""

    step: Step
    error: EtcdError | None = None
    #: the connection may have broken (etcd restarted?): check the token before its next use
    suspect_connection: bool = False


@dataclass
class Attempts:
    """The retry decisions of one request, across its attempts (see ``_session.py``'s doc).

    ``idempotent``: may be sent again after it may have been applied. ``can_reauthenticate``:
    the request carries a token that may be refreshed once. ``not_found_ok_on_retry``: a
    NOT_FOUND after an attempt that may have been applied counts as success (revoking a lease
    twice). ``op`` and ``user`` name the request in errors.
    """

    idempotent: bool
    can_reauthenticate: bool = False
    not_found_ok_on_retry: bool = False
    lease_id: int = 0
    op: Op | None = None
    user: str | None = None
    #: why each endpoint failed, for the error when none answers
    failures: dict[str, str] = field(default_factory=dict)
    token_refreshed: bool = False
    maybe_applied: bool = False
    backoff: Backoff = field(default_factory=lambda: Backoff(CALL_BACKOFF_BASE, CALL_BACKOFF_CAP))

    def cannot_connect(self, endpoint: str) -> None:
        """The endpoint's channel did not become ready: nothing was sent."""
        self.failures[endpoint] = "cannot connect"

    def failed(self, code: str, details: str, endpoint: str) -> Decision:
        """An attempt on ``endpoint`` ended with this gRPC status: what now?"""
        kind = classify_status(code, details)
        if kind is ErrorKind.STALE_TOKEN and self.can_reauthenticate and not self.token_refreshed:
            self.token_refreshed = True
            return Decision(Step.REAUTHENTICATE)
        if kind in (ErrorKind.FATAL, ErrorKind.STALE_TOKEN):
            if self.not_found_ok_on_retry and self.maybe_applied and code == "NOT_FOUND":
                return Decision(Step.DONE)
            error = error_for(
                code, details, endpoint, lease_id=self.lease_id, op=self.op, user=self.user
            )
            return Decision(Step.RAISE, error)
        sent = not not_sent(details)
        if sent and not self.idempotent:
            error = EtcdUnavailableError(
                f"{code}: {details}; the write may or may not have been applied",
                endpoints=(endpoint,),
                code=code,
            )
            return Decision(Step.RAISE, error, suspect_connection=True)
        self.maybe_applied = self.maybe_applied or sent
        self.failures[endpoint] = f"{code}: {details}"
        return Decision(Step.NEXT_ENDPOINT, suspect_connection=True)

    def pause(self, remaining: float, total: float, endpoints: Sequence[str]) -> float:
        """After a pass over every endpoint with ``remaining`` seconds left of ``total``: how
        long to wait before the next pass; raises ``EtcdUnavailableError`` when time is up."""
        if remaining <= 0:
            why = "; ".join(f"{a}: {w}" for a, w in self.failures.items()) or "no time left"
            raise EtcdUnavailableError(
                f"no etcd endpoint answered within {total:g} s ({why})",
                endpoints=endpoints,
                code="UNAVAILABLE",
            )
        return min(self.backoff.next_delay(), remaining)
