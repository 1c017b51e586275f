"""The half both subsetting policies share: a wrapper around a child policy, and how a
subset reaches past the nodes this channel cannot reach (pure).

Like gRPC's ``random_subsetting`` (gRFC A68), a subsetting policy only filters: the balancer
asks :meth:`SubsettingPolicy.rings` which nodes of each group to keep (from every registered
node of the group, whatever its state, so connectivity never moves a subset: at most it
reaches past some members, below), the channel connects to those alone, and the child policy
picks among the usable ones, as usual.

A policy gives each group's subset as :class:`Ring` s: nodes in the order the subset takes
them and how many it takes. When some of those are in TRANSIENT_FAILURE for this channel
(a one-sided partition: etcd still holds their keys, so no subset moves), :func:`take`
reaches past each of them to the next node of its ring, as Finagle's aperture grows past
unavailable nodes - at most ``keep`` more per ring, so a group never holds more than twice
its subset: a channel cut off from everything connects to one fresh subset, not the fleet.
:class:`Unreachable` says which nodes count as down, with hysteresis: a node is down from
its first TRANSIENT_FAILURE until it has been READY for :data:`RECOVERY_HOLD` seconds, so
the reconnect attempts of a dead node (TRANSIENT_FAILURE, IDLE, CONNECTING, ...) and a node
that flaps keep one replacement rather than opening and closing it at every change.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from ..clients import ClientView
from ..config import PolicySettings, SubsettingSettings
from .base import ConnState, Endpoint, Picker, Policy

__all__ = ["RECOVERY_HOLD", "Ring", "SubsettingPolicy", "Unreachable", "Zones", "take"]

T = TypeVar("T")

#: How long a node that was down must be READY before a subset lets go of its replacement
#: (seconds): Envoy's and gRFC A50's base ejection time, the usual "is it back" period.
RECOVERY_HOLD = 30.0


class Ring(NamedTuple):
    """Part of a group's subset: ``keep`` nodes taken from the front of ``order``, and the
    nodes after them, in the order the subset reaches for them past unreachable ones."""

    order: tuple[str, ...]
    keep: int


@dataclass(frozen=True)
class Zones:
    """The localities of a group's nodes and of this channel, for a subset that keeps the
    ``locality`` rules working: ``key`` is the locality's label, ``own`` the caller's value,
    ``of`` each address's (``""``: none)."""

    key: str
    own: str
    of: Mapping[str, str] = field(default_factory=dict)


def take(rings: Iterable[Ring], down: Container[str]) -> list[str]:
    """The members of one group's subset: from each ring its ``keep`` nodes, reaching past
    each that is ``down`` to the next one of the same ring, at most ``keep`` more. The down
    ones stay members (the channel keeps trying them, and sees them come back)."""
    out: list[str] = []
    for order, keep in rings:
        good = 0
        for i, address in enumerate(order):
            if good == keep or i == 2 * keep:
                break
            out.append(address)
            if address not in down:
                good += 1
    return out


class Unreachable:
    """Which connected addresses a subset should reach past (see the module): fed the
    connectivity of every sub-channel at each change, with the time."""

    def __init__(self, hold: float = RECOVERY_HOLD) -> None:
        self.hold = hold
        #: Down addresses -> since when seen READY (None: not READY since it went down).
        self.down: dict[str, float | None] = {}

    def update(self, states: Mapping[str, ConnState], now: float) -> None:
        """Take the states of the connected addresses now (an address not among them is
        forgotten: nothing is known of a node this channel is not connected to)."""
        down = self.down
        for address in [a for a in down if a not in states]:
            del down[address]
        for address, state in states.items():
            if state is ConnState.TRANSIENT_FAILURE:
                down[address] = None
            elif address in down:
                if state is not ConnState.READY:
                    down[address] = None  # trying again: not back yet
                else:
                    since = down[address]
                    if since is None:
                        down[address] = since = now
                    if now - since >= self.hold:
                        del down[address]

    @property
    def recheck_at(self) -> float | None:
        """When a node that is READY again may stop counting as down (the earliest), else
        None: the channel looks again then, though nothing else changed."""
        times = [since + self.hold for since in self.down.values() if since is not None]
        return min(times, default=None)


class SubsettingPolicy:
    """Keeps ``subsetSize`` nodes of each group (:meth:`rings`) and lets its child policy
    (``childPolicy``) build the pickers over them."""

    name: str
    #: Whether the policy needs the view of the calling channels (their client keys).
    needs_clients = False

    def __init__(self, settings: Mapping[str, Any] | PolicySettings | None = None) -> None:
        from . import get_policy  # the package imports this module

        self.settings = SubsettingSettings.of(self.name, settings)
        #: How many nodes of each group to keep.
        self.subset_size = self.settings.subset_size
        #: The policy that picks among the usable nodes of a subset (one per channel).
        self.child: Policy = get_policy(*self.settings.child)

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """The child policy's picker over ``ready`` (the usable nodes of one subset)."""
        return self.child.build(ready)

    def subset(self, addresses: Sequence[str], clients: ClientView | None) -> Sequence[str]:
        """The addresses to keep of one group's ``addresses`` (sorted, distinct), given the
        view of the calling channels (None until one came)."""
        raise NotImplementedError

    def rings(
        self, addresses: Sequence[str], clients: ClientView | None, zones: Zones | None = None
    ) -> list[Ring]:
        """The subset of one group's ``addresses`` (sorted, distinct) as rings (see
        :class:`Ring`); ``zones`` when a locality is configured and the caller has one. This
        default takes :meth:`subset`, then the other addresses in order."""
        chosen = list(self.subset(addresses, clients))
        kept = set(chosen)
        return [Ring((*chosen, *(a for a in addresses if a not in kept)), len(chosen))]
