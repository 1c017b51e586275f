"""grpc-etcd: register gRPC servers in etcd, discover them, balance each call, routed by version.

Sync names live here (``Registry``, ``Registration``, ``BalancedChannel``, ``channel``); their
asyncio twins, with the same names, in :mod:`grpc_etcd.aio`. ``grpc_etcd.testing`` (real etcd
servers for tests) loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import aio
from ._channel._sync import BalancedChannel, FailedCall
from ._registry import Registration, RegistrationState, Registry, channel
from ._serve import drain, serve
from .errors import GrpcEtcdError, RecordError
from .node import MethodInfo, Node
from .routing import CallInfo, current_route, route
from .server import propagate_route, propagate_route_aio
from .snapshot import Snapshot

if TYPE_CHECKING:
    from . import testing as testing

__version__ = "0.1.0"

__all__ = [
    "BalancedChannel",
    "CallInfo",
    "FailedCall",
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

# Loaded on first use: they start processes and need nothing of the rest at import time.
_LAZY = frozenset({"testing"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
