"""The revision bookkeeping of one watch, with no I/O (fed the responses, it says what to do).

A watch stream may break and be re-created any number of times; the cursor remembers which
revision the caller needs next so that no event is lost or repeated, and judges each response:

- ``created``: the (re)created watch's header revision; if it is *below* what was already seen,
  the member lags or etcd's history went back (``ROLLBACK_SUSPECT``: ask the member);
- events: those below the next revision are repeats (a re-created watch replays from where it
  was asked to start) and are dropped;
- a progress notification (no events) is sent only to a watcher that has caught up, so nothing
  at or below its revision is still to come;
- ``compact_revision > 0``: the history needed is gone (``CompactedError``);
- ``canceled``: etcd ended the watch; an auth-related reason deserves one token refresh.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ._outcomes import Op, refused
from ._types import AuthError, CompactedError, EtcdError, WatchEvent

__all__ = ["Cancel", "WatchCursor", "cancel_kind"]

_AUTH_MARKERS = (
    "permission denied",  # etcd 3.5.1 says this for a stale token too
    "invalid auth token",
    "user name is empty",
    "auth store is old",
)


class Cancel(enum.Enum):
    """Why etcd cancelled a watch, as far as the client cares."""

    AUTH = "auth"  #: refresh the token once and re-create; then it is an ``AuthError``
    OTHER = "other"  #: an ``EtcdError``


def cancel_kind(reason: str) -> Cancel:
    """Classify etcd's ``cancel_reason``."""
    lowered = reason.lower()
    return Cancel.AUTH if any(m in lowered for m in _AUTH_MARKERS) else Cancel.OTHER


class WatchCursor:
    """Where a watch stands: ``next_revision`` (0 = "from now", not known yet) and the highest
    store revision seen."""

    __slots__ = ("next_revision", "seen_revision")

    def __init__(self, start_revision: int = 0) -> None:
        self.next_revision = max(0, start_revision)
        self.seen_revision = 0

    def check(
        self,
        *,
        compact_revision: int,
        canceled: bool,
        cancel_reason: str,
        endpoint: str,
        can_refresh_token: bool,
        op: Op | None = None,
        user: str | None = None,
    ) -> Cancel | None:
        """Raise for a compacted or refused watch; ``Cancel.AUTH`` when a token refresh is
        worth one more try (only if ``can_refresh_token``); None for a response to go on with.
        ``op`` and ``user`` name the watch and its user in the ``AuthError`` of a refusal."""
        where = (endpoint,)
        if compact_revision > 0:
            raise CompactedError(
                f"watch from revision {self.next_revision} needs history that was compacted "
                f"(oldest revision left: {compact_revision})",
                compact_revision=compact_revision,
                endpoints=where,
            )
        if not canceled:
            return None
        reason = cancel_reason or "no reason given"
        if cancel_kind(reason) is Cancel.AUTH:
            if can_refresh_token:
                return Cancel.AUTH
            if op is None:
                raise AuthError(f"watch refused: {reason}", endpoints=where, user=user)
            raise refused(op, user, reason, endpoints=where, code=None)
        raise EtcdError(f"watch canceled by etcd: {reason}", endpoints=where)

    def rollback_suspect(self, created_revision: int) -> bool:
        """True when a re-created watch reports an older revision than was seen."""
        return bool(self.seen_revision) and created_revision < self.seen_revision

    def created(self, revision: int) -> None:
        """The watch was (re)created at store ``revision``."""
        if self.next_revision == 0:
            self.next_revision = revision + 1
        self.seen_revision = max(self.seen_revision, revision)

    def events(self, revision: int, events: Sequence[WatchEvent]) -> tuple[WatchEvent, ...]:
        """The events of a response at ``revision`` that the caller has not had yet."""
        fresh = tuple(e for e in events if e.kv.mod_revision >= self.next_revision)
        if fresh:
            self.next_revision = fresh[-1].kv.mod_revision + 1
            self.seen_revision = max(self.seen_revision, revision, self.next_revision - 1)
        return fresh

    def progress(self, revision: int) -> None:
        """A progress notification at ``revision``: the watch has caught up with it."""
        self.next_revision = max(self.next_revision, revision + 1)
        self.seen_revision = max(self.seen_revision, revision)

    def rolled_back(self, current_revision: int, endpoint: str) -> CompactedError | None:
        """The error to raise if the member's linearizable ``current_revision`` proves that
        etcd's history went back, else None (the member only lagged)."""
        if current_revision >= self.seen_revision:
            return None
        return CompactedError(
            f"etcd's revision went back from {self.seen_revision} to {current_revision} "
            "(data lost or wiped?): the history this watch needs is gone; read again",
            compact_revision=current_revision,
            endpoints=(endpoint,),
        )
