"""``least_request`` (gRPC A48): of ``choiceCount`` random nodes, the one with the fewest calls
in flight.

The candidates are distinct nodes, where A48 (after Envoy, and grpc-go with it) draws them
with replacement: then every call whose draws all land on one node goes there whatever its
calls in flight, so a node that accepts calls and never answers still gets 1 call in n^2
(choiceCount 2 of n nodes: 1 in 16 with 4 nodes, 25 of 400 lost in issue 12's test). A48's
rationale names this ("a frozen endpoint would never fully be excluded"). Distinct draws cost
the same (one more comparison to skip the first draw), and with ``choiceCount`` at least the
number of nodes every node is compared.

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
    """Compares ``choice_count`` distinct random endpoints' calls in flight."""

    __slots__ = ("_choices", "_loads", "_n", "_pair", "_picks")

    def __init__(self, ready: Sequence[Endpoint[T]], loads: LoadTable, choices: int) -> None:
        self._loads: tuple[Load, ...] = tuple(loads.get(e.node.address) for e in ready)
        self._picks = tuple(
            Pick(e.subchannel, load.finish) for e, load in zip(ready, self._loads, strict=True)
        )
        self._n = n = len(self._picks)
        self._choices = min(choices, n)
        self._pair = self._choices == 2  # the default: one draw besides the first

    def pick(self, call: CallInfo) -> Pick[T]:
        """The least loaded of the random choices (ties: the first drawn); counted in flight
        until its done callback."""
        n = self._n
        loads = self._loads
        best = int(_rand() * n)
        fewest = len(loads[best].calls)
        if self._pair:
            other = int(_rand() * (n - 1))
            other += other >= best  # any node but the first draw
            if len(loads[other].calls) < fewest:
                best = other
        elif n > 1:
            for other in self._others(best):
                calls = len(loads[other].calls)
                if calls < fewest:
                    best, fewest = other, calls
        loads[best].calls.append(None)
        return self._picks[best]

    def _others(self, first: int) -> list[int]:
        """``choice_count - 1`` distinct indices besides ``first``: all the others, from a
        random start, when there are no more nodes than choices."""
        n = self._n
        if self._choices == n:
            return [(first + step) % n for step in range(1, n)]
        drawn = [first]
        while len(drawn) < self._choices:
            other = int(_rand() * n)
            if other not in drawn:
                drawn.append(other)
        return drawn[1:]


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
