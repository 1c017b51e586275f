"""The ``Pick`` of each sub-channel, made once per policy instance (pure).

A rebuild after one node changed would otherwise allocate a new ``Pick`` for every usable
node: at 1,000 nodes that is 1,000 objects per change, which survive until the next one and
so push the process towards full garbage collections (tens of ms each, with many grpc
channels in the heap). Reusing them keeps a rebuild's allocations to what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from .base import Endpoint, Pick

__all__ = ["PickCache"]

T = TypeVar("T")

# Past this many entries beyond twice the last build's size, the cache is cut back to it.
_SPARE = 1024


class PickCache:
    """Sub-channel -> its ``Pick`` (no done callback). A cached ``Pick`` holds its
    sub-channel, so the ``id`` it is filed under cannot be reused while it is here."""

    __slots__ = ("_picks",)

    def __init__(self) -> None:
        self._picks: dict[int, Pick[Any]] = {}

    def picks(self, ready: Sequence[Endpoint[T]]) -> tuple[Pick[T], ...]:
        """The picks of ``ready``, in its order."""
        cache = self._picks
        get = cache.get
        out: list[Pick[T]] = []
        for endpoint in ready:
            sub = endpoint.subchannel
            pick = get(id(sub))
            if pick is None:
                pick = cache[id(sub)] = Pick(sub)
            out.append(pick)
        if len(cache) > 2 * len(out) + _SPARE:
            self._picks = {id(p.subchannel): p for p in out}
        return tuple(out)
