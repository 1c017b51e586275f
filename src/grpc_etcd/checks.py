"""A service config checked against the nodes registered now, and the share of calls it gives
each subset (pure, no I/O).

``grpc-etcd config set``, ``route set`` and ``config check`` call these before they store a
document; a Python user can call them too::

    from grpc_etcd.checks import check_config, shares

    for finding in check_config(document, registry.nodes("hwholiday.srv.app")):
        print(finding)   # routes[0].to[0].subset {"verison": "v1"}: no node has the label ...

A document can be valid and still take traffic down: a subset that matches no registered node
(``{"verison": "v1"}``, a split to a version not deployed yet) fails its share of the calls, and
a fallback that matches none catches nothing. :func:`check_config` names each such selector and
what was probably meant; :func:`shares` says where the calls go, as the channel draws them (the
weights of the first route that holds, then the fallbacks, for the nodes registered).

The locality's ``key`` is checked too: a key that no registered node carries leaves every
call routed without locality (the channel warns once; ``checks`` says it before the document
is stored).

What is not checked: ``match.source`` names the labels of the *calling* channels, which this
service's nodes do not carry; ``headers``, ``route`` and ``method`` are facts of the calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._words import closest
from .config import Route, ServiceConfig, parse_config
from .node import Node
from .rules import ANY, Selector, fallback_chain, node_labels, selector, selects
from .snapshot import Snapshot

__all__ = ["Finding", "Share", "check_config", "shares"]

#: A label every node carries (the record's ``version`` field).
_ALWAYS = "version"


@dataclass(frozen=True, slots=True)
class Finding:
    """A selector of the document that the registered nodes make useless or wrong.

    ``where`` is its place in the document (``routes[0].to[1].subset``, ``fallback[0]``,
    ``locality``), ``selector`` the selector itself (for the locality, ``{"key": ...}``),
    ``fault`` what is wrong with it and, where one can tell,
    what was meant (``no node has the label 'verison' - did you mean 'version'?``).
    """

    where: str
    selector: Mapping[str, str]
    fault: str

    def __str__(self) -> str:
        return f"{self.where} {json.dumps(dict(self.selector))}: {self.fault}"


def _config(document: ServiceConfig | Mapping[str, Any] | bytes | str) -> ServiceConfig:
    return parse_config(document) if not isinstance(document, ServiceConfig) else document


def _online(nodes: Iterable[Node]) -> list[Node]:
    return [node for node in nodes if node.online]


def check_config(
    document: ServiceConfig | Mapping[str, Any] | bytes | str,
    nodes: Iterable[Node],
) -> list[Finding]:
    """What is wrong with ``document``'s selectors given the registered ``nodes`` (a
    :class:`~grpc_etcd.Snapshot` or any iterable of nodes); ``[]`` when nothing is.

    Every subset of a route's ``to`` and every ``fallback`` selector is checked: a label key
    that no node carries, a value that no node has (with the nearest known one, or the known
    ones), a combination that no node has. A subset of weight 0 gets no calls, so it may name
    a version not deployed yet (a canary staged at 0%); its label keys are still checked. The
    selector ``{}`` matches every node. Nodes whose record marks them offline match nothing.
    A ``locality.key`` that no registered node carries in its metadata is a finding too
    (none with no node registered: nothing to compare it with). ``ConfigError`` when the
    document itself does not validate.
    """
    config = _config(document)
    service = nodes.service if isinstance(nodes, Snapshot) else "the service"
    registered = _online(nodes)
    labels = [node_labels(node) for node in registered]
    findings: list[Finding] = []
    for where, wanted, carries_calls in _selectors(config):
        fault = _fault(wanted, labels, carries_calls, service)
        if fault is not None:
            findings.append(Finding(where, dict(wanted), fault))
    locality = _locality_fault(config, registered)
    if locality is not None:
        findings.append(locality)
    return findings


def _locality_fault(config: ServiceConfig, registered: Sequence[Node]) -> Finding | None:
    """The locality's ``key`` when nodes are registered and none carries it (the balancer
    reads a node's locality from its metadata, so ``version`` is no locality label)."""
    if config.locality is None or not registered:
        return None
    key = config.locality.key
    carried = {name for node in registered for name in node.metadata}
    if key in carried:
        return None
    hint = _hint(key, carried, "labels") if carried else " (no node has any label)"
    fault = f"no node has the label {key!r}, so calls would ignore locality{hint}"
    return Finding("locality", {"key": key}, fault)


def _selectors(config: ServiceConfig) -> Iterable[tuple[str, Mapping[str, str], bool]]:
    """Each checked selector: its place, itself, and whether calls may go to it."""
    for i, route in enumerate(config.routes):
        for j, part in enumerate(route.to):
            yield f"routes[{i}].to[{j}].subset", part.subset, part.weight > 0
    for i, chosen in enumerate(config.fallback):
        yield f"fallback[{i}]", chosen, True


def _fault(
    wanted: Mapping[str, str],
    labels: Sequence[Mapping[str, str]],
    carries_calls: bool,
    service: str,
) -> str | None:
    if not wanted:
        return None  # {}: every node
    if not labels:
        return f"matches no node: no node of {service} is registered" if carries_calls else None
    carried = {key for node in labels for key in node}
    for key in wanted:
        if key not in carried:
            return f"no node has the label {key!r}{_hint(key, carried, 'labels')}"
    if not carries_calls or any(selects(selector(wanted), node) for node in labels):
        return None
    for key, value in wanted.items():
        known = sorted({node[key] for node in labels if key in node})
        if value not in known:
            return f"no node has {key} {value!r}{_hint(value, known, 'known')}"
    together = " and ".join(f"{key}={value}" for key, value in wanted.items())
    return f"no node has {together} together"


def _hint(word: str, known: Iterable[str], kind: str) -> str:
    """`` - did you mean 'x'?`` when a known word is near, else the known ones."""
    near = closest(word, known)
    return f" - did you mean {near!r}?" if near else f" ({kind}: {', '.join(sorted(known))})"


@dataclass(frozen=True, slots=True)
class Share:
    """Where one kind of call goes and how often.

    ``calls`` says which calls (``"calls that name no version"``, ``"calls with header
    x-user-tier=beta"``); ``share`` is the fraction of those calls (0..1) that ``subset``
    gets, ``nodes`` the registered nodes in it. ``asked`` is the subset the route chose when
    those calls fall back to ``subset`` (else equal to it). ``subset`` is ``None`` for the
    share that fails (``UNAVAILABLE: no match found conn``): its subset and every fallback
    match no node.
    """

    calls: str
    subset: Selector | None
    share: float
    nodes: tuple[Node, ...]
    asked: Selector


def shares(
    document: ServiceConfig | Mapping[str, Any] | bytes | str, nodes: Iterable[Node]
) -> list[Share]:
    """Where the calls that name no version go under ``document``, for the ``nodes``
    registered now: per route (first match wins), each subset's share of its calls, after
    the fallbacks, as the channel draws them; the last kind listed is the calls no route with
    a match takes (``other calls``, or ``calls that name no version`` when no route has a
    match). Pinned calls (``x-version``) skip the routes and are not listed. Registration is
    what counts here, not connectivity: a registered node that is down makes its calls fall
    back at run time, which no document can foresee.
    """
    config = _config(document)
    registered = _online(nodes)
    labelled = [(node, node_labels(node)) for node in registered]
    fallback = tuple(selector(f) for f in config.fallback)
    out: list[Share] = []
    catch_all = False
    for route in config.routes:
        calls = _calls(route, conditional=any(not _always(r) for r in config.routes))
        out.extend(_route_shares(calls, route, fallback, labelled))
        if _always(route):
            catch_all = True
            break
    if not catch_all:
        calls = "other calls" if config.routes else "calls that name no version"
        out.append(_resolve(calls, ANY, 1.0, fallback, labelled))
    return out


def _always(route: Route) -> bool:
    match = route.match
    return not (match.source or match.headers or match.route or match.method)


def _calls(route: Route, conditional: bool) -> str:
    match = route.match
    parts = [f"from callers with {_text(match.source)}"] if match.source else []
    parts += [f"header {k}={v}" for k, v in match.headers.items()]
    parts += [f"route {k}={v}" for k, v in match.route.items()]
    parts += [f"method {match.method}"] if match.method else []
    if not parts:
        return "other calls" if conditional else "calls that name no version"
    return "calls " + " and ".join(p if p.startswith("from") else f"with {p}" for p in parts)


def _text(labels: Mapping[str, str]) -> str:
    return "+".join(f"{k}={v}" for k, v in labels.items()) or "any"


def _route_shares(
    calls: str,
    route: Route,
    fallback: tuple[Selector, ...],
    labelled: Sequence[tuple[Node, Mapping[str, str]]],
) -> list[Share]:
    parts = [part for part in route.to if part.weight > 0]
    total = sum(part.weight for part in parts)
    merged: dict[tuple[Selector | None, Selector], Share] = {}
    for part in parts:
        share = _resolve(calls, selector(part.subset), part.weight / total, fallback, labelled)
        key = (share.subset, share.asked)
        if key in merged:  # two parts naming one subset: one line
            share = replace(share, share=merged[key].share + share.share)
        merged[key] = share
    return list(merged.values())


def _resolve(
    calls: str,
    wanted: Selector,
    share: float,
    fallback: tuple[Selector, ...],
    labelled: Sequence[tuple[Node, Mapping[str, str]]],
) -> Share:
    """The subset the calls that chose ``wanted`` reach: the first of its fallback chain
    with a registered node (the balancer's order), or ``None`` (they fail)."""
    for candidate in fallback_chain(wanted, fallback):
        found = tuple(node for node, labels in labelled if selects(candidate, labels))
        if found:
            return Share(calls, candidate, share, found, wanted)
    return Share(calls, None, share, (), wanted)
