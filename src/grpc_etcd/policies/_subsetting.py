"""The half both subsetting policies share: a wrapper around a child policy (pure).

Like gRPC's ``random_subsetting`` (gRFC A68), a subsetting policy only filters: the balancer
asks :meth:`SubsettingPolicy.subset` which nodes of each group to keep (from every registered
node of the group, whatever its state, so connectivity never moves a subset), the channel
connects to those alone, and the child policy picks among the usable ones, as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ..clients import ClientView
from ..config import PolicySettings, SubsettingSettings
from .base import Endpoint, Picker, Policy

__all__ = ["SubsettingPolicy"]

T = TypeVar("T")


class SubsettingPolicy:
    """Keeps ``subsetSize`` nodes of each group (:meth:`subset`) and lets its child policy
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
