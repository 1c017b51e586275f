"""The seed's ``version`` policy in its first shape, kept for code that builds it directly.

``VersionPolicy().build(endpoints)`` takes every endpoint (any state) and returns a picker
that does what a channel with ``policy="version"`` does: a :class:`~._balancer.Balancer`
with the random policy behind the old constructor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from ..routing import CallInfo
from ._balancer import Balancer
from .base import Endpoint, Pick

__all__ = ["VersionPicker", "VersionPolicy"]

T = TypeVar("T")


class VersionPicker(Generic[T]):
    """Random among the usable nodes of the version a call asks for (any node without one)."""

    __slots__ = ("_picker",)

    def __init__(self, endpoints: Sequence[Endpoint[T]]) -> None:
        self._picker = Balancer[T](policy="random").build(endpoints)

    def pick(self, call: CallInfo) -> Pick[T]:
        """Choose a sub-channel, or raise NoMatchError / NotReadyError."""
        return self._picker.pick(call)


class VersionPolicy:
    """Builds :class:`VersionPicker`s from every endpoint; the seed's policy named ``version``."""

    name = "version"

    def build(self, endpoints: Sequence[Endpoint[T]]) -> VersionPicker[T]:
        """Group every endpoint by version and pick among the usable ones."""
        return VersionPicker(endpoints)
