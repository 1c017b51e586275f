"""Names of the xDS resources of one service (pure).

The listener and the route configuration are named after the service (``xds:///a.srv.app``
dials the listener ``a.srv.app``). A cluster is one subset of the service's nodes:
``a.srv.app|*`` every node, ``a.srv.app|version=v1`` a subset (labels sorted, each part
percent-quoted), ``a.srv.app|unknown-version`` where pinned calls with an unknown ``x-version``
go. Its endpoints (EDS) have the same name, so any cluster name maps back to what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

__all__ = [
    "ALL_NODES",
    "UNKNOWN_VERSION",
    "cluster_name",
    "parse_cluster_name",
    "service_of",
]

#: The selector part of the cluster holding every node.
ALL_NODES = "*"
#: The selector part of the cluster of calls pinned to a version nobody registered.
UNKNOWN_VERSION = "unknown-version"
_SEPARATOR = "|"


def cluster_name(service: str, subset: Mapping[str, str] | None) -> str:
    """The cluster of ``subset`` (``None`` -> the unknown-version cluster)."""
    if subset is None:
        return f"{service}{_SEPARATOR}{UNKNOWN_VERSION}"
    if not subset:
        return f"{service}{_SEPARATOR}{ALL_NODES}"
    parts = ",".join(
        f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in sorted(subset.items())
    )
    return f"{service}{_SEPARATOR}{parts}"


def service_of(name: str) -> str:
    """The service a resource name belongs to (a listener, route or cluster name)."""
    return name.split(_SEPARATOR, 1)[0]


def parse_cluster_name(name: str) -> tuple[str, dict[str, str] | None]:
    """``(service, subset)`` of a cluster name; subset ``None`` for the unknown-version one.

    Raises ``ValueError`` for a name that is not one of ours.
    """
    service, sep, selector = name.partition(_SEPARATOR)
    if not sep or not service:
        raise ValueError(f"{name!r} is not a grpc-etcd cluster name (service|selector)")
    if selector == UNKNOWN_VERSION:
        return service, None
    if selector == ALL_NODES:
        return service, {}
    subset: dict[str, str] = {}
    for part in selector.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"{name!r}: bad selector part {part!r} (want key=value)")
        subset[unquote(key)] = unquote(value)
    return service, subset
