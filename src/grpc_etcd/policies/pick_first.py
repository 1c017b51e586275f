"""``pick_first``: every call to the first usable node in a stable order (gRPC's pick_first).

The order is the nodes' addresses, sorted: every client of the service agrees on the same
node, and it changes only when that node stops being usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from ..routing import CallInfo
from ._stateless import StatelessPolicy
from .base import Endpoint, Pick

__all__ = ["PickFirstPicker", "PickFirstPolicy"]

T = TypeVar("T")


class PickFirstPicker(Generic[T]):
    """Always the same endpoint."""

    __slots__ = ("_pick",)

    def __init__(self, ready: Sequence[Endpoint[T]]) -> None:
        first = min(ready, key=lambda e: (e.node.address, e.node.key, e.node.id))
        self._pick = Pick(first.subchannel)

    def pick(self, call: CallInfo) -> Pick[T]:
        """The first endpoint."""
        return self._pick


class PickFirstPolicy(StatelessPolicy):
    """Builds :class:`PickFirstPicker`s: every call to the first of ``ready`` by address."""

    name = "pick_first"
    picker = PickFirstPicker
