"""The asyncio twins, used with ``await``: ``grpc_etcd.aio.Registry`` and friends."""

from __future__ import annotations

from .._channel._aio import BalancedChannel
from .._serve import drain_aio as drain
from .._serve import serve_aio as serve
from ..registry.registration import Registration, RegistrationState
from ..server import propagate_route_aio as propagate_route
from ._registry import Registry, channel

__all__ = [
    "BalancedChannel",
    "Registration",
    "RegistrationState",
    "Registry",
    "channel",
    "drain",
    "propagate_route",
    "serve",
]
