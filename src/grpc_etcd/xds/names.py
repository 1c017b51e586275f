"""Names of the xDS resources of one service (pure).

The listener and the route configuration are named after the service (``xds:///a.srv.app``
dials the listener ``a.srv.app``). A cluster is one subset of the service's nodes:
``a.srv.app|*`` every node, ``a.srv.app|version=v1`` a subset (labels sorted, each part
percent-quoted), ``a.srv.app|unknown-version`` where pinned calls with an unknown ``x-version``
go. ``!<method>`` at the end leaves out the nodes whose record marks that method offline
(the calls of that method go there). Its endpoints (EDS) have the same name, so any cluster
name maps back to what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, unquote

__all__ = [
    "ALL_NODES",
    "UNKNOWN_VERSION",
    "ClusterName",
    "cluster_name",
    "parse_cluster_name",
    "service_of",
]

#: The selector part of the cluster holding every node.
ALL_NODES = "*"
#: The selector part of the cluster of calls pinned to a version nobody registered.
UNKNOWN_VERSION = "unknown-version"
_SEPARATOR = "|"
_WITHOUT = "!"  # quote() never leaves one in a part


class ClusterName(NamedTuple):
    """What a cluster name says: the service, the subset (None: the unknown-version one) and
    the method whose offline nodes are left out ('' for none)."""

    service: str
    subset: dict[str, str] | None
    method: str = ""


def cluster_name(service: str, subset: Mapping[str, str] | None, method: str = "") -> str:
    """The cluster of ``subset`` (``None`` -> the unknown-version cluster), without the nodes
    that mark ``method`` offline when it is given."""
    if subset is None:
        selector = UNKNOWN_VERSION
    elif not subset:
        selector = ALL_NODES
    else:
        selector = ",".join(
            f"{quote(key, safe='')}={quote(value, safe='')}"
            for key, value in sorted(subset.items())
        )
    without = f"{_WITHOUT}{quote(method, safe='')}" if method else ""
    return f"{service}{_SEPARATOR}{selector}{without}"


def service_of(name: str) -> str:
    """The service a resource name belongs to (a listener, route or cluster name)."""
    return name.split(_SEPARATOR, 1)[0]


def parse_cluster_name(name: str) -> ClusterName:
    """What cluster ``name`` holds; ``ValueError`` for a name that is not one of ours."""
    service, sep, rest = name.partition(_SEPARATOR)
    if not sep or not service:
        raise ValueError(f"{name!r} is not a grpc-etcd cluster name (service|selector)")
    selector, _, method = rest.partition(_WITHOUT)
    method = unquote(method)
    if selector == UNKNOWN_VERSION:
        return ClusterName(service, None, method)
    if selector == ALL_NODES:
        return ClusterName(service, {}, method)
    subset: dict[str, str] = {}
    for part in selector.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"{name!r}: bad selector part {part!r} (want key=value)")
        subset[unquote(key)] = unquote(value)
    return ClusterName(service, subset, method)
