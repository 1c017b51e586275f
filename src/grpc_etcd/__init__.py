"""grpc-etcd: register gRPC servers in etcd, discover them, balance each call, routed by version."""

from __future__ import annotations

from . import aio
from .errors import GrpcEtcdError, RecordError
from .node import MethodInfo, Node
from .registry import Registration, RegistrationState, Registry
from .routing import CallInfo, current_route, route
from .snapshot import Snapshot

__version__ = "0.1.0"

__all__ = [
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
    "current_route",
    "route",
]
