"""Balancing policies and the balancer that runs them (pure, no I/O).

Each policy (the table of docs/routing.md) is one short module that builds an immutable picker from
the usable endpoints of one group; :class:`Balancer` does the grouping, the rules and the
fallbacks for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import POLICY_SETTINGS, PolicySettings
from ._balancer import Balancer
from ._fleet import ZONE_ENV
from ._subsetting import SubsettingPolicy
from .base import (
    NO_MATCH_DETAILS,
    ConnState,
    DoneCallback,
    DoneInfo,
    Endpoint,
    NoMatchError,
    NotReadyError,
    Pick,
    Picker,
    PickError,
    Policy,
    QueuePicker,
)
from .deterministic_subsetting import DeterministicSubsettingPolicy
from .least_request import LeastRequestPolicy
from .p2c_ewma import P2CEwmaPolicy
from .pick_first import PickFirstPolicy
from .random import RandomPolicy
from .random_subsetting import RandomSubsettingPolicy
from .ring_hash import RingHashPolicy
from .round_robin import RoundRobinPolicy
from .version import VersionPicker, VersionPolicy
from .weighted_round_robin import WeightedRoundRobinPolicy

__all__ = [
    "NO_MATCH_DETAILS",
    "POLICIES",
    "ZONE_ENV",
    "Balancer",
    "ConnState",
    "DeterministicSubsettingPolicy",
    "DoneCallback",
    "DoneInfo",
    "Endpoint",
    "LeastRequestPolicy",
    "NoMatchError",
    "NotReadyError",
    "P2CEwmaPolicy",
    "Pick",
    "PickError",
    "PickFirstPolicy",
    "Picker",
    "Policy",
    "QueuePicker",
    "RandomPolicy",
    "RandomSubsettingPolicy",
    "RingHashPolicy",
    "RoundRobinPolicy",
    "SubsettingPolicy",
    "VersionPicker",
    "VersionPolicy",
    "WeightedRoundRobinPolicy",
    "get_policy",
]

#: Every policy by name, with how to make a new instance from its settings.
POLICIES: Mapping[str, Callable[[Mapping[str, Any] | PolicySettings | None], Policy]] = {
    "random": RandomPolicy,
    "version": lambda settings: RandomPolicy(settings, name="version"),
    "pick_first": PickFirstPolicy,
    "round_robin": RoundRobinPolicy,
    "weighted_round_robin": WeightedRoundRobinPolicy,
    "least_request": LeastRequestPolicy,
    "p2c_ewma": P2CEwmaPolicy,
    "ring_hash": RingHashPolicy,
    "deterministic_subsetting": DeterministicSubsettingPolicy,
    "random_subsetting": RandomSubsettingPolicy,
}
assert set(POLICIES) == set(POLICY_SETTINGS), "config.POLICY_SETTINGS names every policy"


def get_policy(
    policy: str | Policy, settings: Mapping[str, Any] | PolicySettings | None = None
) -> Policy:
    """A NEW instance of the policy named ``policy`` with ``settings`` (its ``{}`` in
    ``loadBalancingConfig``, or its typed settings from a config), or ``policy`` itself if it
    is already one.

    Raises ``ValueError`` for an unknown name (naming the known ones) or invalid settings.
    """
    if not isinstance(policy, str):
        return policy
    make = POLICIES.get(policy)
    if make is None:
        raise ValueError(f"unknown balancing policy {policy!r}; known: {', '.join(POLICIES)}")
    return make(settings)
