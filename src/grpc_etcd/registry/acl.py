"""Least-privilege etcd roles for one service (pure: names, permissions, what to change).

``grpc-etcd acl grant SERVICE --server USER | --client USER | --operator USER | --xds USER``
creates these roles and grants them; this module says what they hold. Under the registry root
``R`` (often empty), for service ``S`` whose nodes live under ``P/`` (``a.srv.app`` ->
``/a/srv/app/``):

========  ==========================================  =========================================
kind      may                                         needs it to
========  ==========================================  =========================================
server    read and write ``P/*``                      register: put its key (a txn that also
                                                      compares it), keep it, delete it, revoke
                                                      its lease (etcd checks write on every key
                                                      of a lease it revokes)
client    read ``P/*`` and ``R/grpc-etcd/config/S``;  discover the nodes and follow the config;
          read and write ``R/grpc-etcd/clients/S/*``  hold its leased key for subsetting
operator  read and write ``R/grpc-etcd/config/S``;    set, roll back and check the config (the
          read ``P/*``                                checks compare it with the nodes)
xds       read ``P/*`` and ``R/grpc-etcd/config/S``   serve S over xDS (``grpc-etcd xds``):
                                                      follow its nodes and its config; it
                                                      counts the clients connected to it, not
                                                      their keys, and writes nothing
========  ==========================================  =========================================

Leases are not key-scoped in etcd: any authenticated user may grant one and keep one alive;
only revoking checks the keys bound to it. So no role grants anything about leases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..clients import clients_prefix
from ..config import config_key
from ..naming import _normalize_root, service_prefix, validate_service
from .etcd._outcomes import key_text
from .etcd._types import Permission, prefix_range_end

__all__ = [
    "KINDS",
    "Kind",
    "Plan",
    "describe",
    "permissions",
    "plan",
    "role_name",
]

#: The kinds of user of a service that ``grpc-etcd acl`` gives a role each.
Kind = Literal["server", "client", "operator", "xds"]
KINDS: tuple[Kind, ...] = ("server", "client", "operator", "xds")


def role_name(service: str, kind: Kind, root: str = "") -> str:
    """The etcd role of one kind of user of a service: ``grpc-etcd[/root]/<service>/<kind>``
    (etcd's roles are global, so the root is part of the name)."""
    validate_service(service)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return f"grpc-etcd{_normalize_root(root)}/{service}/{kind}"


def _under(prefix: str, access: Literal["read", "readwrite"]) -> Permission:
    key = prefix.encode()
    return Permission(access, key, prefix_range_end(key))


def permissions(service: str, kind: Kind, root: str = "") -> tuple[Permission, ...]:
    """Exactly what the role of ``kind`` holds (see the module doc)."""
    role_name(service, kind, root)  # checks both
    nodes = service_prefix(service, root)
    config = config_key(service, root).encode()
    if kind == "server":
        return (_under(nodes, "readwrite"),)
    if kind == "client":
        return (
            _under(nodes, "read"),
            Permission("read", config),
            _under(clients_prefix(service, root), "readwrite"),
        )
    if kind == "xds":
        return (_under(nodes, "read"), Permission("read", config))
    return (Permission("readwrite", config), _under(nodes, "read"))


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes that turn a role's permissions into the wanted ones: each ``revoke`` is a
    ``(key, range_end)`` to take back, each ``grant`` a permission to give."""

    revoke: tuple[tuple[bytes, bytes], ...]
    grant: tuple[Permission, ...]

    @property
    def empty(self) -> bool:
        """True when the role already holds exactly what it should."""
        return not self.revoke and not self.grant


def plan(current: Iterable[Permission], wanted: Sequence[Permission]) -> Plan:
    """What to revoke and grant so that a role holding ``current`` holds exactly ``wanted``.

    etcd keys a role's permissions by their exact range: granting on a range it has replaces
    the access, so only ranges that are not wanted at all are revoked."""
    have = set(current)
    wanted_ranges = {(p.key, p.range_end) for p in wanted}
    revoke = tuple(
        sorted({(p.key, p.range_end) for p in have} - wanted_ranges),
    )
    grant = tuple(p for p in wanted if p not in have)
    return Plan(revoke, grant)


def describe(permission: Permission) -> str:
    """``readwrite /a/srv/app/*`` (a prefix), ``read /grpc-etcd/config/a.srv.app`` (one key),
    or the raw range for anything else."""
    key = key_text(permission.key)
    if not permission.range_end:
        return f"{permission.access} {key}"
    if permission.key and permission.range_end == prefix_range_end(permission.key):
        return f"{permission.access} {key}*"
    end = key_text(permission.range_end)
    return f"{permission.access} [{key}, {end})"
