"""The etcd layer: our etcd client, registration and discovery. It knows nothing of channels.

The facades that compose it with channels are ``grpc_etcd.Registry`` and
``grpc_etcd.aio.Registry``.
"""

from __future__ import annotations

from .registration import RegistrationState

__all__ = ["RegistrationState"]
