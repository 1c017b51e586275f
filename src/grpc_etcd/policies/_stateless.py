"""The policy half of the policies that keep nothing between builds (pure).

``pick_first``, ``round_robin`` and ``weighted_round_robin`` hold no per-address state: their
policy keeps its typed settings and makes a picker per build (wrapped for slow start, when
the settings ask for it and a node is warming).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..config import NoSettings, PolicySettings, SlowStartSettings
from ._slow_start import slow_start
from .base import Endpoint, Picker

__all__ = ["StatelessPolicy"]

T = TypeVar("T")


class StatelessPolicy:
    """A policy that is its picker: ``build(ready)`` is ``picker(ready)``; ``clock`` (seconds,
    ``time.monotonic``'s) tells slow start how long each node has been READY."""

    name: str
    picker: Callable[[Sequence[Endpoint[Any]]], Picker[Any]]
    #: The model of this policy's settings.
    settings_model: type[PolicySettings] = NoSettings

    def __init__(
        self,
        settings: Mapping[str, Any] | PolicySettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = self.settings_model.of(self.name, settings)
        self._clock = clock
        typed = self.settings
        self._slow_start = typed.slow_start_config if isinstance(typed, SlowStartSettings) else None

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """A new picker over ``ready``."""
        return slow_start(self.picker(ready), ready, self._slow_start, self._clock)
