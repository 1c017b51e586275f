"""What a call asks for: ``route()`` values, call metadata and the version's precedence (pure).

``route(version="v1")`` is the Python twin of the Go original's ``context.WithValue``: a
ContextVar, so it follows the code path of one request through sync code and asyncio tasks
(but not into threads you start yourself; copy the context with ``contextvars.copy_context``).

Values that ``propagate_route()`` carried in from an incoming call live in a second ContextVar
underneath, so a call can tell the caller's own word from an inherited one (docs/routing.md, step 2:
the ``x-version`` of this call, else ``route()``, else the channel's ``version=``, else the
propagated version).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "METADATA_ROUTE_KEYS",
    "VERSION_METADATA_KEY",
    "CallInfo",
    "CallRouter",
    "current_route",
    "route",
    "route_from_metadata",
]

#: Metadata key that carries the wanted version across processes.
VERSION_METADATA_KEY = "x-version"

#: Call metadata keys that carry route values, and the route value each one sets.
METADATA_ROUTE_KEYS: Mapping[str, str] = MappingProxyType({VERSION_METADATA_KEY: "version"})

_NO_ROUTE: Mapping[str, str] = MappingProxyType({})
# What the caller wrote with route(), and below it what propagate_route() carried in.
_route: ContextVar[Mapping[str, str]] = ContextVar("grpc_etcd_route", default=_NO_ROUTE)
_propagated: ContextVar[Mapping[str, str]] = ContextVar(
    "grpc_etcd_propagated_route", default=_NO_ROUTE
)

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
    """The route values in force here: ``route()``'s over those propagated from the incoming
    call (empty when neither is active)."""
    propagated = _propagated.get()
    return {**propagated, **_route.get()} if propagated else _route.get()


def route_from_metadata(metadata: Metadata | None) -> dict[str, str]:
    """The route values that call metadata carries (``x-version`` -> ``version``)."""
    values: dict[str, str] = {}
    for key, value in metadata or ():
        name = METADATA_ROUTE_KEYS.get(key)
        if name is not None and value:
            values[name] = value.decode() if isinstance(value, bytes) else value
    return values


def _set_propagated(values: Mapping[str, str]) -> Token[Mapping[str, str]]:
    """Install values carried in from an incoming call; returns the token to reset them."""
    return _propagated.set(MappingProxyType(dict(values)))


def _reset_propagated(token: Token[Mapping[str, str]]) -> None:
    _propagated.reset(token)


class CallInfo(NamedTuple):
    """What a picker may look at for one call (a NamedTuple: built on every call, cheaply)."""

    method: str
    #: The pinned version (step 3's winner), or None: the route table decides.
    version: str | None = None
    #: The ``route()`` values in force, over the propagated ones.
    route: Mapping[str, str] = _NO_ROUTE
    wait_for_ready: bool = False
    #: The call's outgoing metadata (header matches, ring_hash's ``requestHashHeader``).
    metadata: tuple[tuple[str, str | bytes], ...] = ()


# The metadata keys whose value pins the version (one today: x-version).
_VERSION_KEYS = frozenset(key for key, name in METADATA_ROUTE_KEYS.items() if name == "version")

# Bound on the per-router cache of implied-version metadata; versions come from callers.
_MAX_CACHED = 256

_tuple_new: Any = tuple.__new__

# The ContextVars' getters, bound once: resolve() runs on every call.
_route_get = _route.get
_propagated_get = _propagated.get


class CallRouter:
    """Turns one call's metadata and route values into a CallInfo and its outgoing metadata.

    It runs on every call, so it is flat code: two ContextVar reads, then, for a call with no
    metadata and nothing routed (no ``route()``, nothing propagated), the CallInfo made once
    for such calls; else one scan of the call's metadata and a cached one-item metadata tuple
    for implied versions.
    """

    __slots__ = ("_bare", "_bare_waiting", "_default", "_method", "_tags")

    def __init__(self, method: str, default_version: str | None) -> None:
        self._method = method
        self._default = default_version
        self._tags: dict[str, tuple[tuple[str, str], ...]] = {}
        # What every call without metadata resolves to while nothing is routed, by its
        # wait_for_ready: the channel's version= (sent along as x-version), else none.
        version = default_version or None
        tag = ((VERSION_METADATA_KEY, version),) if version is not None else None
        self._bare = (CallInfo(method, version, _NO_ROUTE, False, tag or ()), tag)
        self._bare_waiting = (CallInfo(method, version, _NO_ROUTE, True, tag or ()), tag)

    def resolve(
        self, metadata: Metadata | None, wait_for_ready: bool | None
    ) -> tuple[CallInfo, Any]:
        """The call's CallInfo, and its metadata with ``x-version`` added when it was implied."""
        own = _route_get()
        inherited = _propagated_get()
        if metadata is None and own is _NO_ROUTE and inherited is _NO_ROUTE:
            return self._bare_waiting if wait_for_ready else self._bare
        version = None
        if metadata:
            for key, value in metadata:
                if key in _VERSION_KEYS:
                    version = value.decode() if isinstance(value, bytes) else value
                    break
        if not version:
            # docs/routing.md, step 2: route() beats the channel's version=, then a propagated one.
            version = own.get("version") or self._default or inherited.get("version")
            if version is not None:
                # Send the implied version along, so the server (and what it calls) sees it.
                if metadata:
                    metadata = (*metadata, (VERSION_METADATA_KEY, version))
                else:
                    metadata = self._tags.get(version) or self._tag(version)
        values = {**inherited, **own} if inherited else own
        sent = () if not metadata else metadata if type(metadata) is tuple else tuple(metadata)
        # tuple.__new__ makes the NamedTuple without the Python frame of its __new__: about
        # 1,400 fewer instructions a call (of 6,800: callgrind).
        info = (self._method, version, values, bool(wait_for_ready), sent)
        return _tuple_new(CallInfo, info), metadata

    def _tag(self, version: str) -> tuple[tuple[str, str], ...]:
        if len(self._tags) >= _MAX_CACHED:
            self._tags.clear()
        tag = self._tags[version] = ((VERSION_METADATA_KEY, version),)
        return tag
