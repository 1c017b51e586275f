"""Value types and exceptions of grpc_etcd's etcd client (shared by the async and sync twins)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grpc_etcd.errors import (
    AuthError,
    CompactedError,
    EtcdClientClosedError,
    EtcdError,
    EtcdUnavailableError,
    LeaseNotFoundError,
)

__all__ = [
    "AuthError",
    "CompactedError",
    "EtcdClientClosedError",
    "EtcdError",
    "EtcdUnavailableError",
    "Key",
    "KeyValue",
    "Lease",
    "LeaseNotFoundError",
    "Permission",
    "Status",
    "TLSConfig",
    "WatchEvent",
    "WatchResponse",
    "prefix_range_end",
]


# ---------------------------------------------------------------------------------------------
# values


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key starting with ``prefix``
    (etcd's convention; ``b"\\0"`` = up to the end of the key space)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


#: a key or value as the client's methods take it (``str`` is encoded as UTF-8)
Key = str | bytes


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it (``mvccpb.KeyValue``)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change to one key. For a delete, ``kv`` has the key, an empty value and
    ``mod_revision`` = the revision of the delete; ``prev_kv`` is set only if the watch asked
    for ``prev_kv=True`` (and etcd still had it)."""

    type: Literal["put", "delete"]
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One batch of events (all events of a revision are in the same batch).

    ``revision`` is etcd's store revision when the batch was sent; a progress notification
    (``progress_notify=True``, ``events=()``) promises that no event at or below ``revision``
    is still to come.
    """

    revision: int
    events: tuple[WatchEvent, ...]
    progress_notify: bool
    #: True only for the one response a ``watch(created_notify=True)`` yields once the watch
    #: exists on etcd (no events): every change after ``revision`` will be delivered
    created: bool = False


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS settings: ``ca_file`` (PEM roots; ``None`` = the system's), ``cert_file`` +
    ``key_file`` for mutual TLS, ``server_name`` to override the name checked in the server's
    certificate (e.g. when dialing an IP address)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


#: what an etcd role may do with a key range (etcd's ``authpb.Permission.Type``)
Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True, slots=True)
class Permission:
    """One key permission of an etcd role: ``access`` to ``[key, range_end)``, etcd's way of
    naming keys (``range_end`` empty: the key alone; ``prefix_range_end(key)``: every key that
    starts with ``key``)."""

    access: Access
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class Status:
    """``Maintenance.Status`` of one member: ``leader`` is the member id it believes leads
    (0 = none), ``member_id`` its own id, ``revision`` its store revision."""

    leader: int
    member_id: int
    revision: int
    raft_term: int
    version: str
    endpoint: str

    @property
    def is_leader(self) -> bool:
        """True when the member that answered is the leader."""
        return self.leader != 0 and self.leader == self.member_id


class Lease(int):
    """A granted lease: an ``int`` (the lease id, usable anywhere a lease id is expected) that
    also carries ``ttl``, the time-to-live etcd actually granted (etcd raises a too-small TTL to
    its minimum, about 1.5 x the election timeout; 2 s with etcd's default timings)."""

    ttl: int

    def __new__(cls, lease_id: int, ttl: int) -> Lease:
        self = super().__new__(cls, lease_id)
        self.ttl = ttl
        return self

    @property
    def id(self) -> int:
        """The lease id (the int itself)."""
        return int(self)

    def __repr__(self) -> str:
        return f"Lease(id={int(self)}, ttl={self.ttl})"

    def __reduce__(self) -> tuple[type[Lease], tuple[int, int]]:
        return (Lease, (int(self), self.ttl))
