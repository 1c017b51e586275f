"""Checks and conversions shared by the sync and asyncio registries (pure)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence

from ..naming import instance_key, new_instance_id, validate_service
from ..node import MethodInfo, Node, parse_address
from .registration import _check_version, _check_weight

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINTS_ENV", "build_node", "endpoints_or_default"]

#: Where a Registry (and the CLI) looks for etcd when told nothing: etcd's own default.
DEFAULT_ENDPOINT = "127.0.0.1:2379"
#: The environment variable naming the etcd endpoints (comma-separated), for Registry and CLI.
ENDPOINTS_ENV = "GRPC_ETCD_ENDPOINTS"

_UNSPECIFIED = {"0.0.0.0", "::"}

Methods = Iterable[str] | Mapping[str, MethodInfo] | None


def endpoints_or_default(endpoints: str | Sequence[str] | None) -> str | Sequence[str]:
    """``endpoints`` if given, else ``$GRPC_ETCD_ENDPOINTS``, else ``127.0.0.1:2379``."""
    if endpoints is not None:
        return endpoints
    return os.environ.get(ENDPOINTS_ENV, "").strip() or DEFAULT_ENDPOINT


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host in _UNSPECIFIED


def build_node(
    service: str,
    *,
    address: str,
    version: str,
    metadata: Mapping[str, str] | None,
    weight: int | None,
    methods: Methods,
    advertise: str | None,
    instance_id: str | None,
    root: str,
) -> Node:
    """The node a ``register()`` call describes, with every argument checked."""
    validate_service(service)
    host, _ = parse_address(address)
    if advertise is not None:
        adv_host, _ = parse_address(advertise)
        if _is_unspecified(adv_host):
            raise ValueError(f"advertise={advertise!r} must be an address clients can dial")
        address = advertise
    elif _is_unspecified(host):
        raise ValueError(
            f"address {address!r} is a wildcard that clients cannot dial; pass "
            f"advertise='HOST:PORT' with the address clients should use"
        )
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata must map str to str, got {k!r}: {v!r}")
    if weight is not None:
        meta["weight"] = str(_check_weight(weight))
    if methods is None:
        method_map: dict[str, MethodInfo] = {}
    elif isinstance(methods, Mapping):
        method_map = dict(methods)
    elif isinstance(methods, str):
        raise ValueError("methods must be a list of method names, not one string")
    else:
        method_map = {name: MethodInfo() for name in methods}
    node_id = instance_id or new_instance_id(service)
    return Node(
        service=service,
        id=node_id,
        address=address,
        version=_check_version(version),
        metadata=meta,
        methods=method_map,
        key=instance_key(service, node_id, root),
    )
