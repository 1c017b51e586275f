"""What a call asks for: ``route()`` values and the ``x-version`` metadata (pure, no I/O).

``route(version="v1")`` is the Python twin of the Go original's ``context.WithValue``: a
ContextVar, so it follows the code path of one request through sync code and asyncio tasks
(but not into threads you start yourself; copy the context with ``contextvars.copy_context``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "VERSION_METADATA_KEY",
    "CallInfo",
    "call_version",
    "current_route",
    "route",
]

#: Metadata key that carries the wanted version across processes.
VERSION_METADATA_KEY = "x-version"

_NO_ROUTE: Mapping[str, str] = MappingProxyType({})
_route: ContextVar[Mapping[str, str]] = ContextVar("grpc_etcd_route", default=_NO_ROUTE)

Metadata = Sequence[tuple[str, str | bytes]]


@contextmanager
def route(version: str | None = None, **values: str) -> Iterator[Mapping[str, str]]:
    """Route the calls made inside the ``with`` block: ``with route(version="v1"): stub.Call(...)``.

    Values nest: an inner ``route`` adds to or overrides the outer one. ``version=None`` keeps the
    outer version. Works in sync code and in asyncio (``with`` inside a coroutine).
    """
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"route value {name}= must be a str, got {type(value).__name__}")
    if version is not None:
        if not isinstance(version, str) or not version:
            raise ValueError(f"route(version=...) must be a non-empty str, got {version!r}")
        values["version"] = version
    merged = MappingProxyType({**_route.get(), **values})
    token = _route.set(merged)
    try:
        yield merged
    finally:
        _route.reset(token)


def current_route() -> Mapping[str, str]:
    """The route values in force here (empty when no ``route()`` block is active)."""
    return _route.get()


def _set_route(values: Mapping[str, str]) -> object:
    """Set the route for the current context; returns the token for ``_reset_route``."""
    return _route.set(MappingProxyType(dict(values)))


def _reset_route(token: object) -> None:
    _route.reset(token)  # type: ignore[arg-type]


def metadata_version(metadata: Metadata | None) -> str | None:
    """The ``x-version`` value in call metadata, if any."""
    if metadata:
        for key, value in metadata:
            if key == VERSION_METADATA_KEY:
                return value.decode() if isinstance(value, bytes) else value
    return None


def call_version(metadata: Metadata | None, default: str | None = None) -> str | None:
    """The version a call asks for: ``x-version`` metadata, else ``route()``, else ``default``."""
    version = metadata_version(metadata)
    if version:
        return version
    return _route.get().get("version") or default


class CallInfo(NamedTuple):
    """What a picker may look at for one call (a NamedTuple: built on every call, cheaply)."""

    method: str
    version: str | None = None
    route: Mapping[str, str] = _NO_ROUTE
    wait_for_ready: bool = False
