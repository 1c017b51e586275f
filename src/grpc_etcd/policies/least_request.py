"""``least_request`` (gRPC A48): of ``choiceCount`` random nodes, the one with the fewest calls
in flight.

The counts live on the policy instance, per address, so a rebuild (any connectivity change)
keeps them; a pick adds one and its done callback takes it away.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..config import LeastRequestSettings, PolicySettings
from ..routing import CallInfo
from ._load import Load, LoadTable
from ._slow_start import slow_start
from .base import Endpoint, Pick, Picker

__all__ = ["LeastRequestPicker", "LeastRequestPolicy"]

T = TypeVar("T")
_rand = _random.random


class LeastRequestPicker(Generic[T]):
    """Compares ``choice_count`` random endpoints' calls in flight (A48 draws with replacement)."""

    __slots__ = ("_choices", "_loads", "_n", "_picks")

    def __init__(self, ready: Sequence[Endpoint[T]], loads: LoadTable, choices: int) -> None:
        self._loads: tuple[Load, ...] = tuple(loads.get(e.node.address) for e in ready)
        self._picks = tuple(
            Pick(e.subchannel, load.finish) for e, load in zip(ready, self._loads, strict=True)
        )
        self._n = len(self._picks)
        self._choices = range(choices - 1)

    def pick(self, call: CallInfo) -> Pick[T]:
        """The least loaded of the random choices; counted in flight until its done callback."""
        n = self._n
        loads = self._loads
        best = int(_rand() * n)
        fewest = len(loads[best].calls)
        for _ in self._choices:
            other = int(_rand() * n)
            calls = len(loads[other].calls)
            if calls < fewest:
                best, fewest = other, calls
        loads[best].calls.append(None)
        return self._picks[best]


class LeastRequestPolicy:
    """Builds :class:`LeastRequestPicker`s; settings ``{"choiceCount": 2..10}`` (default 2)."""

    name = "least_request"

    def __init__(
        self,
        settings: Mapping[str, Any] | PolicySettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = LeastRequestSettings.of(self.name, settings)
        self.choice_count = self.settings.choice_count
        self._loads = LoadTable()
        self._clock = clock

    def inflight(self, address: str) -> int:
        """Calls picked for ``address`` through this policy that have not ended."""
        return self._loads.get(address).inflight

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """A picker over ``ready`` that shares this policy's in-flight counts."""
        self._loads.keep(e.node.address for e in ready)
        picker = LeastRequestPicker(ready, self._loads, self.choice_count)
        return slow_start(picker, ready, self.settings.slow_start_config, self._clock)
