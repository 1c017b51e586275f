"""etcd I/O: registration and discovery. ``Registry`` and ``Registration`` are the sync twins."""

from __future__ import annotations

from .registration import RegistrationState
from .sync import Registration, Registry

__all__ = ["Registration", "RegistrationState", "Registry"]
