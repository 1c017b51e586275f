"""grpc-etcd: register gRPC servers in etcd, discover them, balance each call, routed by version.

Sync names live here (``Registry``, ``Registration``, ``BalancedChannel``, ``channel``); their
asyncio twins, with the same names, in :mod:`grpc_etcd.aio`.
"""

from __future__ import annotations

from . import aio
from ._serve import drain, serve

# The subpackage grpc_etcd.channel is imported before the function ``channel`` below is
# defined, so the function keeps the name (a later import of the subpackage, already in
# sys.modules, does not rebind it). Import the class as ``from grpc_etcd import BalancedChannel``.
from .channel import BalancedChannel
from .errors import GrpcEtcdError, RecordError
from .node import MethodInfo, Node
from .registry import Registration, RegistrationState, Registry
from .registry.sync import channel
from .routing import CallInfo, current_route, route
from .server import propagate_route, propagate_route_aio
from .snapshot import Snapshot

__version__ = "0.1.0"

__all__ = [
    "BalancedChannel",
    "CallInfo",
    "GrpcEtcdError",
    "MethodInfo",
    "Node",
    "RecordError",
    "Registration",
    "RegistrationState",
    "Registry",
    "Snapshot",
    "aio",
    "channel",
    "current_route",
    "drain",
    "propagate_route",
    "propagate_route_aio",
    "route",
    "serve",
]
