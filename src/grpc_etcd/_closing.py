"""The context-manager protocol of everything that has a ``close()``, written once.

Pure: no grpc, asyncio or threading. A class lists one of these among its bases and keeps
its own ``close()`` (or ``_open()``); ``with`` / ``async with`` then call it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds (each subclass says what)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OpenClosing(Closing):
    """As :class:`Closing`, but entering runs ``_open()`` first; when that fails, whatever it
    started is closed again before the error goes on."""

    __slots__ = ()

    def _open(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self


class AsyncClosing:
    """``async with obj:`` returns ``obj`` and awaits ``obj.close()`` on the way out."""

    __slots__ = ()

    async def close(self) -> None:
        """Release what the object holds (each subclass says what)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
