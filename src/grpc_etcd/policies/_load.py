"""Per-address call statistics a policy keeps across rebuilds (pure, lock-free).

Counting calls in flight with ``list.append`` / ``list.pop`` and reading them with ``len``
keeps the hot path free of locks: each of these is atomic in CPython (and thread-safe in the
free-threaded build), where ``n += 1`` on an attribute is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .base import DoneInfo

__all__ = ["Load", "LoadTable"]

# Past this many idle entries for addresses no longer in use, the table forgets them.
_SPARE_ENTRIES = 1024


class Load:
    """One address's calls in flight (and whatever a policy adds on top)."""

    __slots__ = ("calls", "finish")

    def __init__(self) -> None:
        self.calls: list[None] = []
        #: The done callback of a pick of this address: one call less in flight.
        self.finish: Callable[[DoneInfo], None] = self._finish

    @property
    def inflight(self) -> int:
        """Calls picked for this address that have not ended yet."""
        return len(self.calls)

    def _finish(self, info: DoneInfo) -> None:
        # Not contextlib.suppress: this runs once per call, and try is 5x cheaper.
        try:  # noqa: SIM105
            self.calls.pop()
        except IndexError:  # called twice: never below zero
            pass


class LoadTable:
    """Address -> stats, kept by the policy instance so rebuilds never reset them."""

    __slots__ = ("_entries", "_factory", "_largest")

    def __init__(self, factory: Callable[[], Load] = Load) -> None:
        self._entries: dict[str, Load] = {}
        self._factory = factory
        self._largest = 0

    def get(self, address: str) -> Load:
        """The stats of ``address``, created empty the first time."""
        load = self._entries.get(address)
        if load is None:
            load = self._entries[address] = self._factory()
        return load

    def keep(self, addresses: Iterable[str]) -> None:
        """Note a build over ``addresses``; forget idle addresses once there are many spare."""
        live = set(addresses)
        self._largest = max(self._largest, len(live))
        if len(self._entries) > 4 * self._largest + _SPARE_ENTRIES:
            for address, load in list(self._entries.items()):
                if address not in live and not load.calls:
                    del self._entries[address]

    def __len__(self) -> int:
        return len(self._entries)
