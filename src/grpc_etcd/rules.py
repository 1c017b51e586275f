"""Which nodes a call may reach: labels, subsets, offline methods and the route table (pure).

docs/routing.md's steps 1-5 without the balancing itself: a node's labels are its metadata plus
``version``; a subset selector keeps the nodes whose labels hold every value it names; the
route table (compiled once per config and calling channel) chooses the subset of a call that
pins no version, with the canary split drawn in O(log k) over the route's k subsets.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate

from .config import Route, ServiceConfig
from .node import Node
from .routing import CallInfo

__all__ = [
    "ANY",
    "RouteTable",
    "Selector",
    "fallback_chain",
    "node_labels",
    "offline_methods",
    "selector",
    "selects",
    "version_selector",
]

_rand = random.random

#: A subset selector in a hashable form: its (label, value) pairs, sorted.
Selector = tuple[tuple[str, str], ...]

#: The selector ``{}``: every node.
ANY: Selector = ()


def selector(labels: Mapping[str, str]) -> Selector:
    """The hashable form of a selector written as a mapping: ``{"version": "v1"}``."""
    return tuple(sorted(labels.items()))


def version_selector(version: str) -> Selector:
    """The subset a call pinned to ``version`` uses (docs/routing.md, step 2)."""
    return (("version", version),)


def node_labels(node: Node) -> dict[str, str]:
    """A node's labels: its metadata, plus ``version`` (the record's field wins)."""
    return {**node.metadata, "version": node.version}


def selects(wanted: Selector, labels: Mapping[str, str]) -> bool:
    """True when ``labels`` hold every value ``wanted`` names (``ANY`` holds always)."""
    return all(labels.get(name) == value for name, value in wanted)


def fallback_chain(wanted: Selector, fallback: Sequence[Selector]) -> tuple[Selector, ...]:
    """The subsets a call that chose ``wanted`` tries, in order (docs/routing.md, step 5):
    ``wanted``, then each fallback selector other than ``wanted`` itself."""
    return (wanted, *(f for f in fallback if f != wanted))


def offline_methods(node: Node) -> frozenset[str]:
    """The methods the node's record marks ``online: false`` (the seed's ``endpoints`` keys)."""
    return frozenset(name for name, info in node.methods.items() if not info.online)


def method_is_offline(offline: frozenset[str], method: str) -> bool:
    """True when ``method`` (``/pkg.Service/Method``) is in ``offline``, which may name it
    fully or, as the seed does, by its last part only."""
    return method in offline or method.rsplit("/", 1)[-1] in offline


class _CompiledRoute:
    __slots__ = (
        "always",
        "headers",
        "method",
        "prefix",
        "route",
        "targets",
        "total",
        "weights",
    )

    def __init__(self, route: Route, index_of: dict[Selector, int]) -> None:
        match = route.match
        self.headers = tuple(match.headers.items())
        self.route = tuple(match.route.items())
        self.method = match.method
        self.prefix = bool(match.method and match.method.endswith("/"))
        parts = [part for part in route.to if part.weight > 0]
        self.targets = tuple(index_of.setdefault(selector(p.subset), len(index_of)) for p in parts)
        self.weights = tuple(accumulate(part.weight for part in parts))
        self.total = self.weights[-1]
        #: An empty match (after the source test) holds for every call.
        self.always = not (self.headers or self.route or self.method)

    def holds(self, call: CallInfo) -> bool:
        if self.method is not None:
            if self.prefix:
                if not call.method.startswith(self.method):
                    return False
            elif call.method != self.method:
                return False
        if self.route:
            values = call.route
            for name, value in self.route:
                if values.get(name) != value:
                    return False
        return all(_has_header(call.metadata, name, value) for name, value in self.headers)


def _has_header(metadata: Sequence[tuple[str, str | bytes]], name: str, value: str) -> bool:
    for key, item in metadata:
        if key == name and (item == value or (isinstance(item, bytes) and item == value.encode())):
            return True
    return False


class RouteTable:
    """docs/routing.md, step 3, for one config and one calling channel (``source`` labels).

    ``selectors`` lists every subset the table can choose, ``ANY`` first; :meth:`choose`
    returns an index into it. Routes whose ``source`` does not hold for this channel are
    dropped once, here, so a call never tests them.
    """

    __slots__ = ("_routes", "fallback", "selectors")

    def __init__(self, config: ServiceConfig, source: Mapping[str, str] | None = None) -> None:
        labels = dict(source or {})
        index_of: dict[Selector, int] = {ANY: 0}
        self._routes = tuple(
            _CompiledRoute(route, index_of)
            for route in config.routes
            if selects(selector(route.match.source), labels)
        )
        #: The fallback selectors, in order (docs/routing.md, step 5).
        self.fallback: tuple[Selector, ...] = tuple(selector(f) for f in config.fallback)
        self.selectors: tuple[Selector, ...] = tuple(index_of)

    @property
    def empty(self) -> bool:
        """True when no route applies to this channel: every unpinned call may reach any node."""
        return not self._routes

    def choose(self, call: CallInfo) -> int:
        """The index in ``selectors`` of the subset this (unpinned) call goes to."""
        for route in self._routes:
            if route.always or route.holds(call):
                if len(route.targets) == 1:
                    return route.targets[0]
                # The canary split: a weighted draw, a binary search over cumulative weights.
                return route.targets[bisect_right(route.weights, _rand() * route.total)]
        return 0
