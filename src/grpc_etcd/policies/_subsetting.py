"""The half both subsetting policies share: a wrapper around a child policy, and how a
subset reaches past the nodes this channel cannot reach (pure).

Like gRPC's ``random_subsetting`` (gRFC A68), a subsetting policy only filters: the balancer
asks :meth:`SubsettingPolicy.rings` which nodes of each group to keep (from every registered
node of the group, whatever its state, so connectivity never moves a subset), the channel
connects to those alone, and the child policy picks among the usable ones, as usual.

A policy gives each group's subset as :class:`Ring` s: nodes in the order the subset takes
them and how many it takes. :func:`take` takes them, reaching past the ones that are down to
the next node of their ring, at most ``keep`` more per ring.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from ..clients import ClientView
from ..config import PolicySettings, SubsettingSettings
from .base import Endpoint, Picker, Policy

__all__ = ["Ring", "SubsettingPolicy", "Zones", "take"]

T = TypeVar("T")


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
