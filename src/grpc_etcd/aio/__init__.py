"""The asyncio twins: ``grpc_etcd.aio.Registry`` and friends, used with ``await``."""

from __future__ import annotations

from ..registry.registration import Registration, RegistrationState
from .registry import Registry

__all__ = ["Registration", "RegistrationState", "Registry"]
