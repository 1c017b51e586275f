"""How one group's nodes become its picker in a large fleet: panic threshold and locality (pure).

The balancer decides, the policy only builds pickers over the nodes it is given:

* **Panic** (Envoy's ``healthy_panic_threshold``): when fewer than ``panicThreshold`` percent
  of the group's registered nodes (one per address) are usable, the policy picks among every
  READY node of the group, ignoring health checks and ejection (and locality), instead of
  piling every call onto the few left.
* **prefer_local** (Envoy's priority levels with its overprovisioning factor 1.4): the
  caller's locality is priority 0, the others priority 1. A level's health is
  ``min(1, 1.4 x usable / registered)``; the local level gets ``health0 / min(1, health0 +
  health1)`` of the calls (at most all), the others the rest, so calls stay local while at
  least 1 / 1.4 = 72 % of the local nodes are usable and spill over in proportion below that.
* **zone_aware** (Envoy's zone-aware routing, ``load_balancer_impl.cc``): from the share of
  the calling channels in each locality (``callers``) and the share of usable nodes
  (``upstream``), a caller sends everything locally when its locality has at least its share
  of the nodes, else ``upstream / callers`` of its calls, and the rest to the other
  localities in proportion to their residual capacity ``upstream - callers``: every node then
  gets the same share of the fleet's calls.

Below ``minClusterSize`` registered nodes, without a caller locality or (zone_aware) before
the view of the callers is known, locality is not applied: the policy picks among all of the
group's usable nodes.

With subsetting the group's members are the channel's subset, which holds each locality's
share of it only to the nearest node; zone_aware then weighs each locality by its size in the
whole group (``sizes``) times the usable share of its nodes in the subset, so the fleet's
proportions decide, not the subset's rounding.
"""

from __future__ import annotations

import random as _random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Generic, TypeVar

from ..clients import ZONE_ENV  # the caller's locality when its source labels do not name it
from ..config import Locality
from ..routing import CallInfo
from .base import ConnState, Endpoint, Pick, Picker, Policy

__all__ = [
    "OVERPROVISIONING",
    "ZONE_ENV",
    "GroupRules",
    "LocalityPicker",
    "group_picker",
    "prefer_local_share",
    "zone_aware_shares",
]

T = TypeVar("T")

#: Envoy's default overprovisioning factor (``overprovisioning_factor`` 140 %).
OVERPROVISIONING = 1.4
_READY = ConnState.READY
_rand = _random.random


@dataclass(frozen=True)
class GroupRules:
    """What shapes every group's picker: the policy, the panic threshold (percent, 0: off),
    the locality settings with the caller's locality (``zone``, "" when unknown), and for
    zone_aware how the calling channels are spread over the localities (None: not known) and,
    when the group's members are a subset of it, its registered nodes per locality."""

    policy: Policy
    panic: float = 0.0
    locality: Locality | None = None
    zone: str = ""
    callers: Mapping[str, int] | None = None
    sizes: Mapping[str, int] | None = None


def prefer_local_share(
    local_usable: int, local_registered: int, remote_usable: int, remote_registered: int
) -> float:
    """The share of calls ``prefer_local`` keeps in the caller's locality (Envoy's priority
    load with overprovisioning 1.4, normalized when both levels are degraded)."""
    if local_usable == 0:
        return 0.0
    if remote_usable == 0:
        return 1.0
    local = min(1.0, OVERPROVISIONING * local_usable / local_registered)
    remote = min(1.0, OVERPROVISIONING * remote_usable / remote_registered)
    return min(1.0, local / min(1.0, local + remote))


def zone_aware_shares(
    zone: str, callers: Mapping[str, int], upstream: Mapping[str, float]
) -> tuple[float, dict[str, float]] | None:
    """Envoy's zone-aware split for a caller in ``zone``: the share of its calls that stay
    local, and the other localities' weights (residual capacity) for the rest; None when
    zone-aware routing does not apply (fewer than two localities of callers or of usable
    nodes, or no caller in ``zone``)."""
    total_callers = sum(callers.values())
    total_nodes = sum(upstream.values())
    if (
        sum(1 for n in upstream.values() if n) < 2
        or sum(1 for n in callers.values() if n) < 2
        or not callers.get(zone)
    ):
        return None
    local_callers = callers[zone] / total_callers
    local_nodes = upstream.get(zone, 0) / total_nodes
    if local_nodes > 0 and local_nodes >= local_callers:
        return 1.0, {}
    residual = {
        other: count / total_nodes - callers.get(other, 0) / total_callers
        for other, count in upstream.items()
        if other != zone and count
    }
    kept = {other: r for other, r in residual.items() if r > 0}
    if not kept:  # rounding only (Envoy: a random locality)
        kept = dict.fromkeys(residual, 1.0)
    return local_nodes / local_callers, kept


class LocalityPicker(Generic[T]):
    """A share of the calls to the local child picker, the rest to the others by weight."""

    __slots__ = ("_cumulative", "_local", "_others", "_share", "_total")

    def __init__(
        self,
        local: Picker[T] | None,
        share: float,
        others: Sequence[Picker[T]],
        weights: Sequence[float],
    ) -> None:
        self._local = local
        self._share = share if local is not None else 0.0
        self._others = tuple(others)
        self._cumulative = tuple(accumulate(weights))
        self._total = self._cumulative[-1] if self._cumulative else 0.0

    def pick(self, call: CallInfo) -> Pick[T]:
        """The local picker's answer for its share of the calls, else another locality's."""
        local = self._local
        if local is not None and (self._share >= 1.0 or _rand() < self._share):
            return local.pick(call)
        others = self._others
        if len(others) == 1:
            return others[0].pick(call)
        return others[bisect_right(self._cumulative, _rand() * self._total)].pick(call)


def _distinct(endpoints: Sequence[Endpoint[T]]) -> dict[int, Endpoint[T]]:
    """One endpoint per sub-channel (the first), in order."""
    found: dict[int, Endpoint[T]] = {}
    for endpoint in endpoints:
        found.setdefault(id(endpoint.subchannel), endpoint)
    return found


def group_picker(
    members: Sequence[Endpoint[T]], usable: Sequence[Endpoint[T]], rules: GroupRules
) -> Picker[T] | None:
    """The picker of a group whose registered nodes are ``members`` and usable ones
    ``usable`` (one per sub-channel); None when no call can be picked now."""
    policy = rules.policy
    if rules.panic:
        registered = _distinct(members)
        if len(usable) * 100 < rules.panic * len(registered):
            ready = [e for e in registered.values() if e.state is _READY]
            if len(ready) > len(usable):
                return policy.build(ready)
    if not usable:
        return None
    locality = rules.locality
    if locality is None or not rules.zone:
        return policy.build(usable)
    registered = _distinct(members)
    if len(registered) < locality.min_cluster_size:
        return policy.build(usable)
    key, zone = locality.key, rules.zone
    by_zone: dict[str, list[Endpoint[T]]] = {}
    for endpoint in usable:
        by_zone.setdefault(endpoint.node.metadata.get(key, ""), []).append(endpoint)
    local = by_zone.pop(zone, [])
    if locality.mode == "prefer_local":
        local_registered = sum(1 for e in registered.values() if e.node.metadata.get(key) == zone)
        if not local_registered:
            return policy.build(usable)
        remote = [e for e in usable if e.node.metadata.get(key, "") != zone]
        share = prefer_local_share(
            len(local), local_registered, len(remote), len(registered) - local_registered
        )
        if share >= 1.0:
            return policy.build(local)
        if share <= 0.0:
            return policy.build(remote)
        return LocalityPicker(policy.build(local), share, [policy.build(remote)], [1.0])
    if rules.callers is None:
        return policy.build(usable)
    upstream: dict[str, float] = {name: len(nodes) for name, nodes in by_zone.items()}
    upstream[zone] = len(local)
    if rules.sizes is not None:  # a subset: the group's sizes, at the subset's usable shares
        held: dict[str, int] = {}
        for endpoint in registered.values():
            name = endpoint.node.metadata.get(key, "")
            held[name] = held.get(name, 0) + 1
        upstream = {n: rules.sizes.get(n, 0) * u / held[n] for n, u in upstream.items() if u}
    split = zone_aware_shares(zone, rules.callers, upstream)
    if split is None:
        return policy.build(usable)
    share, weights = split
    if share >= 1.0:
        return policy.build(local)
    names = sorted(weights)
    others = [policy.build(by_zone[name]) for name in names]
    return LocalityPicker(
        policy.build(local) if local else None, share, others, [weights[n] for n in names]
    )
