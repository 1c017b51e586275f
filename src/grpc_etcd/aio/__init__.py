"""The asyncio twins, used with ``await``: ``grpc_etcd.aio.Registry`` and friends."""

from __future__ import annotations

from ..channel.aio import BalancedChannel
from ..registry.registration import Registration, RegistrationState
from ..server import propagate_route_aio as propagate_route
from .registry import Registry, channel

__all__ = [
    "BalancedChannel",
    "Registration",
    "RegistrationState",
    "Registry",
    "channel",
    "propagate_route",
]
