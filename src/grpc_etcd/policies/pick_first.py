"""``pick_first``: every call to the first usable node in a stable order (gRPC's pick_first).

The order is the nodes' addresses, sorted: every client of the service agrees on the same
node, and it changes only when that node stops being usable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..config import validate_policy_settings
from ..routing import CallInfo
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


class PickFirstPolicy:
    """Builds :class:`PickFirstPicker`s."""

    name = "pick_first"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        validate_policy_settings(self.name, settings)

    def build(self, ready: Sequence[Endpoint[T]]) -> PickFirstPicker[T]:
        """A picker that always returns the first of ``ready`` by address."""
        return PickFirstPicker(ready)
