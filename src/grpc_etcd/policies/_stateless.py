"""The policy half of the policies that keep nothing between builds (pure).

``pick_first``, ``round_robin`` and ``weighted_round_robin`` take no settings and hold no
per-address state: their policy checks the (empty) settings and makes a picker per build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..config import NoSettings, PolicySettings
from .base import Endpoint, Picker

__all__ = ["StatelessPolicy"]

T = TypeVar("T")


class StatelessPolicy:
    """A policy that is its picker: ``build(ready)`` is ``picker(ready)``."""

    name: str
    picker: Callable[[Sequence[Endpoint[Any]]], Picker[Any]]

    def __init__(self, settings: Mapping[str, Any] | PolicySettings | None = None) -> None:
        self.settings = NoSettings.of(self.name, settings)

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """A new picker over ``ready``."""
        return self.picker(ready)
