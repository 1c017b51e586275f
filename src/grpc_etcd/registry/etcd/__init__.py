"""grpc_etcd's own small etcd v3 client, on grpcio: ``AsyncEtcdClient`` and its sync twin
``EtcdClient``. Users import ``TLSConfig`` from here (``Registry(tls=TLSConfig(...))``), and
``registry.client`` is one of these clients, for reads and writes of their own; channels and
the pure core never import it.

It speaks etcd's gRPC API directly (a private, minimal copy of etcd's protos in ``_proto``), so
it brings no other etcd library and cannot clash with one loaded in the same process.
"""

from __future__ import annotations

from ._aio import AsyncEtcdClient, prefix_range_end
from ._endpoints import EtcdEndpoint, parse_endpoint, split_endpoints
from ._keepalive import KeepAlive
from ._sync import EtcdClient, SyncKeepAlive
from ._types import (
    AuthError,
    CompactedError,
    EtcdClientClosedError,
    EtcdError,
    EtcdUnavailableError,
    KeyValue,
    Lease,
    LeaseNotFoundError,
    Permission,
    Status,
    TLSConfig,
    WatchEvent,
    WatchResponse,
)

__all__ = [
    "AsyncEtcdClient",
    "AuthError",
    "CompactedError",
    "EtcdClient",
    "EtcdClientClosedError",
    "EtcdEndpoint",
    "EtcdError",
    "EtcdUnavailableError",
    "KeepAlive",
    "KeyValue",
    "Lease",
    "LeaseNotFoundError",
    "Permission",
    "Status",
    "SyncKeepAlive",
    "TLSConfig",
    "WatchEvent",
    "WatchResponse",
    "parse_endpoint",
    "prefix_range_end",
    "split_endpoints",
]
