"""Balancing policies: each builds an immutable picker from endpoints (pure, no I/O)."""

from __future__ import annotations

from .base import (
    NO_MATCH_DETAILS,
    ConnState,
    DoneCallback,
    Endpoint,
    NoMatchError,
    NotReadyError,
    Pick,
    Picker,
    PickError,
    Policy,
    QueuePicker,
)
from .version import VersionPicker, VersionPolicy

__all__ = [
    "NO_MATCH_DETAILS",
    "ConnState",
    "DoneCallback",
    "Endpoint",
    "NoMatchError",
    "NotReadyError",
    "Pick",
    "PickError",
    "Picker",
    "Policy",
    "QueuePicker",
    "VersionPicker",
    "VersionPolicy",
    "get_policy",
]

_POLICIES: dict[str, type[Policy]] = {"version": VersionPolicy}


def get_policy(policy: str | Policy) -> Policy:
    """The policy named ``policy`` (``"version"``), or ``policy`` itself if it is one."""
    if not isinstance(policy, str):
        return policy
    try:
        return _POLICIES[policy]()
    except KeyError:
        raise ValueError(
            f"unknown balancing policy {policy!r}; known: {', '.join(sorted(_POLICIES))}"
        ) from None
