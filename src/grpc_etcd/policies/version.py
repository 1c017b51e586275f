"""The seed's ``version`` policy: random among the READY nodes of the version a call asks for.

Without the seed's faults: a call with no version goes to any node; matching nodes that are
still connecting make the call wait instead of failing; the pick is two dict lookups and a
random index, whatever the number of nodes (the seed scans every node under one lock).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

from ..routing import CallInfo
from .base import ConnState, Endpoint, NoMatchError, NotReadyError, Pick

__all__ = ["VersionPicker", "VersionPolicy"]

T = TypeVar("T")

# Sentinel key for "the call asked for no version": every node matches.
_ANY = object()


class VersionPicker(Generic[T]):
    """Immutable per-version index of READY sub-channels."""

    __slots__ = ("_failures", "_ready", "_registered")

    def __init__(self, endpoints: Sequence[Endpoint[T]]) -> None:
        # Per group, sub-channel id -> Pick: two nodes at one address share one sub-channel,
        # which must not get twice the share of the calls.
        ready: dict[object, dict[int, Pick[T]]] = {}
        registered: set[object] = set()
        failing: dict[object, list[str | None]] = {}
        healthy: set[object] = set()
        for endpoint in endpoints:
            for group in (endpoint.node.version, _ANY):
                registered.add(group)
                if endpoint.state is ConnState.READY:
                    ready.setdefault(group, {})[id(endpoint.subchannel)] = Pick(endpoint.subchannel)
                if endpoint.state is ConnState.TRANSIENT_FAILURE:
                    failing.setdefault(group, []).append(endpoint.error)
                else:
                    healthy.add(group)
        self._ready: dict[object, tuple[Pick[T], ...]] = {
            k: tuple(v.values()) for k, v in ready.items()
        }
        self._registered = frozenset(registered)
        # Groups whose every node is in TRANSIENT_FAILURE, with the last connection error.
        self._failures: dict[object, str] = {
            group: next((e for e in reversed(errors) if e), "connection failed")
            for group, errors in failing.items()
            if group not in healthy
        }

    def pick(self, call: CallInfo) -> Pick[T]:
        group: object = call.version if call.version else _ANY
        candidates = self._ready.get(group)
        if candidates:
            return candidates[int(random.random() * len(candidates))]
        if group not in self._registered and not call.wait_for_ready:
            raise NoMatchError()
        raise NotReadyError(self._failures.get(group))


class VersionPolicy:
    """Builds :class:`VersionPicker`s; the policy named ``"version"``."""

    name = "version"

    def build(self, endpoints: Sequence[Endpoint[T]]) -> VersionPicker[T]:
        """Index the READY endpoints by version."""
        return VersionPicker(endpoints)
