"""The balancer both channels share: from every endpoint to one picker per call (pure).

As grpc-go's ``balancer/base``: the channel hands over one endpoint per node (any state) on
every change; the balancer groups them by the subsets the config can ask for, keeps per group
the usable endpoints (READY, serving, not ejected), one per sub-channel, and builds one child
picker per group with the policy. The call's picker then only chooses a group - pinned
version, route table, fallbacks - and asks that group's child picker.

Incremental: a group whose members did not change keeps its child picker, so a change of one
node rebuilds only the groups that node is in. Not thread-safe: the channel calls
:meth:`Balancer.build` and :meth:`Balancer.configure` from one thread at a time; the pickers
it returns may be used from any number of threads.

Subsetting (docs/scale.md): a policy with a ``rings(addresses, clients, zones)`` method
(``_subsetting.SubsettingPolicy``; or only ``subset(addresses, clients)``) keeps only some
nodes of each group. :meth:`Balancer.plan` asks it, group by group, from every node of the
snapshot (in any state) - with the localities of the nodes and the caller when a locality is
configured - and returns the addresses the channel must connect to; :meth:`Balancer.replan`
does it again after a change of connectivity, reaching past the members this channel cannot
reach (``_subsetting.take``, ``Unreachable``); :meth:`Balancer.build` then puts a node only
in the groups whose subset holds it. The view of the calling channels
(``clients.ClientView``) reaches the balancer through :meth:`Balancer.update_clients`, as
snapshots reach it through ``build``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Generic, TypeVar

from ..clients import ZONE_ENV, ZONE_LABEL, ClientView, client_labels
from ..config import ServiceConfig, parse_config
from ..node import Node
from ..routing import CallInfo
from ..rules import (
    ANY,
    RouteTable,
    Selector,
    fallback_chain,
    method_is_offline,
    node_labels,
    offline_methods,
    selects,
    version_selector,
)
from ._fleet import GroupRules, group_picker
from ._subsetting import Ring, Unreachable, Zones, take
from .base import ConnState, Endpoint, NoMatchError, NotReadyError, Pick, Picker, Policy

__all__ = ["Balancer", "Subsets"]

#: Per group (its selector), the addresses of its subset.
Subsets = dict[Selector, frozenset[str]]

T = TypeVar("T")

_log = logging.getLogger("grpc_etcd.routing")
_READY = ConnState.READY
_NONE: frozenset[str] = frozenset()
# Every other state (IDLE, CONNECTING, SHUTDOWN) may still become usable: a call waits for
# it rather than falling back.
_FAILING = ConnState.TRANSIENT_FAILURE


def _same(old: Sequence[Endpoint[T]], new: Sequence[Endpoint[T]]) -> bool:
    """True when two member lists are the same endpoints in the same states (identity is
    enough for the node and sub-channel: the channel reuses them while they don't change)."""
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if not (
            a.node is b.node
            and a.subchannel is b.subchannel
            and a.state is b.state
            and a.serving is b.serving
            and a.ejected is b.ejected
            and a.error == b.error
            and a.ready_since == b.ready_since
        ):
            return False
    return True


def _failure(members: Sequence[Endpoint[T]]) -> str:
    """Why every member of a group is unusable: the last connection error, else the reason."""
    for endpoint in reversed(members):
        if endpoint.error:
            return endpoint.error
    last = members[-1]
    if last.ejected:
        return f"{last.node.address} is ejected by outlier detection"
    if not last.serving:
        return f"{last.node.address} is NOT_SERVING (health check)"
    return "connection failed"


#: Below this many members a changed group is rebuilt from scratch (as cheap, and simpler).
_INCREMENTAL_FROM = 32


def _coming(endpoint: Endpoint[T]) -> bool:
    """IDLE, CONNECTING or SHUTDOWN: may still become usable."""
    return endpoint.state is not _FAILING and endpoint.state is not _READY


def _admit(
    endpoints: Iterable[Endpoint[T]], usable: dict[int, Endpoint[T]], coming: int
) -> tuple[int, bool]:
    """Add the usable ``endpoints`` to ``usable`` (keyed by sub-channel) and count the ones still
    coming; the new count, and whether two usable ones share a sub-channel."""
    shared = False
    for endpoint in endpoints:
        if endpoint.usable:
            # One sub-channel per address: two records at one address get one share.
            if usable.setdefault(id(endpoint.subchannel), endpoint) is not endpoint:
                shared = True
        elif _coming(endpoint):
            coming += 1
    return coming, shared


class _Group(Generic[T]):
    """The endpoints of one subset and the policy's child picker over the usable ones.

    Immutable once built: a change makes a new group (:meth:`changed`), which starts from
    this one's usable endpoints instead of testing every member again.
    """

    __slots__ = (
        "_by_method",
        "_rules",
        "coming",
        "failure",
        "members",
        "offline",
        "picker",
        "shared",
        "usable",
        "waiting",
    )

    def __init__(
        self,
        members: Sequence[Endpoint[T]],
        rules: GroupRules,
        offline: frozenset[str] = frozenset(),
    ) -> None:
        usable: dict[int, Endpoint[T]] = {}
        coming, shared = _admit(members, usable, 0)
        self._finish(tuple(members), rules, offline, usable, coming, shared)

    def _finish(
        self,
        members: tuple[Endpoint[T], ...],
        rules: GroupRules,
        offline: frozenset[str],
        usable: dict[int, Endpoint[T]],
        coming: int,
        shared: bool,
    ) -> None:
        self.members = members
        self._rules = rules
        self.usable = usable
        #: How many members are IDLE, CONNECTING or SHUTDOWN; ``shared``: two usable
        #: members share one sub-channel (then a removal needs a full rebuild).
        self.coming = coming
        self.shared = shared
        #: The policy's picker over the usable members, or over every READY one in panic,
        #: or per locality (``_fleet``); None when no call can be picked now.
        self.picker: Picker[T] | None = group_picker(members, list(usable.values()), rules)
        self.waiting = coming > 0
        self.failure = _failure(members) if members and not usable and not coming else None
        #: Methods some member's record marks offline (the rare case that needs a filter).
        self.offline = offline
        self._by_method: dict[str, _Group[T]] = {}

    def changed(
        self,
        members: tuple[Endpoint[T], ...],
        offline: frozenset[str],
        added: Sequence[Endpoint[T]],
        removed: Sequence[Endpoint[T]],
    ) -> _Group[T]:
        """This group after ``removed`` left and ``added`` joined (``members``: the result):
        O(changed) but for one copy of the usable map and the policy's build."""
        if self.shared or len(members) < _INCREMENTAL_FROM:
            return _Group(members, self._rules, offline)
        usable = self.usable.copy()
        coming = self.coming
        for endpoint in removed:
            if endpoint.usable:
                usable.pop(id(endpoint.subchannel), None)
            elif _coming(endpoint):
                coming -= 1
        coming, shared = _admit(added, usable, coming)
        group: _Group[T] = _Group.__new__(_Group)
        group._finish(members, self._rules, offline, usable, coming, shared)
        return group

    def for_method(self, method: str) -> _Group[T]:
        """This group without the nodes whose record marks ``method`` offline."""
        if not self.offline or not method_is_offline(self.offline, method):
            return self
        group = self._by_method.get(method)
        if group is None:
            kept = [
                e for e in self.members if not method_is_offline(offline_methods(e.node), method)
            ]
            group = self._by_method[method] = _Group(kept, self._rules)  # none offline left
        return group


def _chain_picker(chain: tuple[_Group[T], ...]) -> Callable[[CallInfo], Pick[T]]:
    """How a call that chose ``chain`` picks: straight to the first group's child picker in
    the usual case (it has usable nodes and no offline method), else through :func:`_pick`."""
    first = chain[0]
    if first.picker is not None and not first.offline:
        return first.picker.pick
    return partial(_pick, chain)


def _pick(chain: tuple[_Group[T], ...], call: CallInfo) -> Pick[T]:
    """docs/routing.md, steps 5 and 6: the first group of the chain with a usable node picks."""
    failure = None
    for group in chain:
        if group.offline:
            group = group.for_method(call.method)
        picker = group.picker
        if picker is not None:
            return picker.pick(call)
        if group.waiting:
            raise NotReadyError()  # a node is still connecting: wait, do not fall back yet
        if failure is None:
            failure = group.failure
    if failure is not None:
        raise NotReadyError(failure)
    if call.wait_for_ready:
        raise NotReadyError()
    raise NoMatchError()


class _BalancedPicker(Generic[T]):
    """The picker a Balancer builds: chooses the call's group chain, then its child picker."""

    __slots__ = ("_any", "_chains", "_choose", "_pinned", "_unknown")

    def __init__(
        self,
        table: RouteTable | None,
        chains: Sequence[tuple[_Group[T], ...]],
        pinned: dict[str, tuple[_Group[T], ...]],
        unknown: tuple[_Group[T], ...],
    ) -> None:
        self._choose = None if table is None else table.choose
        self._chains = tuple(_chain_picker(chain) for chain in chains)
        self._any = self._chains[0]
        self._pinned = {version: _chain_picker(chain) for version, chain in pinned.items()}
        self._unknown = partial(_pick, unknown)

    def pick(self, call: CallInfo) -> Pick[T]:
        """Choose a sub-channel, or raise NoMatchError / NotReadyError."""
        if call.version:
            return self._pinned.get(call.version, self._unknown)(call)
        if self._choose is None:
            return self._any(call)
        return self._chains[self._choose(call)](call)


class _NodeInfo:
    __slots__ = ("node", "offline", "selectors")

    def __init__(self, node: Node, table: RouteTable) -> None:
        self.node = node
        self.offline = offline_methods(node) if node.methods else frozenset()
        labels = node_labels(node)
        mine = [ANY, version_selector(node.version)]
        mine += [s for s in table.selectors if s not in mine and selects(s, labels)]
        mine += [s for s in table.fallback if s not in mine and selects(s, labels)]
        self.selectors: tuple[Selector, ...] = tuple(mine) if node.online else ()


_Rings = Callable[[Sequence[str], ClientView | None, Zones | None], Sequence[Ring]]


def _rings_of(policy: Policy) -> _Rings | None:
    """How ``policy`` takes each group's subset as rings (None: it takes every node); a
    policy of one's own with only ``subset(addresses, clients)`` reaches past nothing."""
    rings: _Rings | None = getattr(policy, "rings", None)
    if rings is not None:
        return rings
    subset = getattr(policy, "subset", None)
    if subset is None:
        return None

    def one(
        addresses: Sequence[str], clients: ClientView | None, zones: Zones | None
    ) -> list[Ring]:
        chosen = tuple(subset(addresses, clients))
        return [Ring(chosen, len(chosen))]

    return one


class Balancer(Generic[T]):
    """Turns the channel's endpoints into pickers, under a service config.

    ``config`` is the code's config; ``policy`` a shortcut for its ``loadBalancingConfig``
    (a name, or a Policy instance of your own; it wins over ``config``'s); ``source`` the
    labels of the calling channel that routes' ``match.source`` test; ``zone`` the caller's
    locality when ``source`` does not name it (the channel passes ``$GRPC_ETCD_ZONE``).
    :meth:`configure` lays a config from etcd over the code's one (key by key);
    ``configure(ServiceConfig())`` returns to the code's.
    """

    def __init__(
        self,
        config: ServiceConfig | None = None,
        *,
        policy: str | Policy | None = None,
        source: Mapping[str, str] | None = None,
        zone: str | None = None,
    ) -> None:
        from . import get_policy  # the registry imports this module

        base = config if config is not None else ServiceConfig()
        self._custom: Policy | None = None
        if isinstance(policy, str):
            get_policy(policy)  # an unknown name: ValueError naming the known ones
            base = base.merged(parse_config({"loadBalancingConfig": [{policy: {}}]}))
        elif policy is not None:
            self._custom = policy
        self._base = base
        self._source = dict(source or {})
        self._zone = zone or ""
        self._warned: set[str] = set()
        self._layer = ServiceConfig()
        self._policy_key: tuple[str, object] | None = None
        self._groups: dict[Selector, _Group[T]] = {}
        self._nodes: dict[int, _NodeInfo] = {}
        # The endpoints of the last build (by id) and, per group, its members by node id:
        # the next build applies only what differs. None: index everything again.
        self._last: dict[int, Endpoint[T]] = {}
        self._members: dict[Selector, dict[int, Endpoint[T]]] | None = None
        #: Per group, the nodes in it that mark some method offline (by node id).
        self._offline_nodes: dict[Selector, dict[int, _NodeInfo]] = {}
        self._clients: ClientView | None = None
        #: What the last :meth:`plan` chose per group; None: no subsetting, every node counts.
        self._subsets: Subsets | None = None
        #: Per group, the rings its subset is taken from (the last plan's); None: no subsetting.
        self._rings: dict[Selector, Sequence[Ring]] | None = None
        #: The connected addresses a subset reaches past (docs/scale.md).
        self.unreachable = Unreachable()
        self._caller_zone = ""
        #: Per group, its own rules when they differ from ``_rules`` (see ``_size_groups``).
        self._group_rules: dict[Selector, GroupRules] = {}
        self._apply()

    @property
    def config(self) -> ServiceConfig:
        """The config in force: the code's, with etcd's keys over it."""
        return self._config

    @property
    def policy(self) -> Policy:
        """The policy instance building the child pickers (one per channel, kept across builds)."""
        return self._policy

    @property
    def needs_clients(self) -> bool:
        """True when the config in force needs the view of the calling channels (the channel
        then holds a client key and feeds the view to :meth:`update_clients`): a policy that
        asks for it (``deterministic_subsetting``), or ``zone_aware`` locality."""
        locality = self._config.locality
        zone_aware = locality is not None and locality.mode == "zone_aware"
        return zone_aware or bool(getattr(self._policy, "needs_clients", False))

    @property
    def client_labels(self) -> dict[str, str]:
        """The labels of this channel's client key: its ``source`` labels, with its locality
        (``source``'s, else ``zone``) under the config's ``locality.key`` (``zone`` without a
        locality), so the other channels find it where zone_aware and per-zone subsets look."""
        locality = self._config.locality
        key = locality.key if locality is not None else ZONE_LABEL
        return client_labels(self._source, {ZONE_ENV: self._zone}, key)

    @property
    def clients(self) -> ClientView | None:
        """The last view of the calling channels (None until one came)."""
        return self._clients

    def update_clients(self, view: ClientView) -> None:
        """Use this view of the calling channels from the next :meth:`plan` and :meth:`build`
        on (zone_aware weighs the localities by how the callers are spread over them)."""
        self._clients = view
        self._set_rules()

    def configure(self, config: ServiceConfig) -> None:
        """Use ``config`` (from etcd) over the code's config from the next :meth:`build` on
        (and :meth:`plan`: a new policy may subset differently)."""
        self._layer = config
        self._apply()

    @property
    def subsetting(self) -> bool:
        """True when the last :meth:`plan` kept a subset of each group."""
        return self._rings is not None

    def plan(
        self,
        nodes: Iterable[Node],
        states: Mapping[str, ConnState] | None = None,
        now: float = 0.0,
    ) -> frozenset[str] | None:
        """The addresses the channel should keep connections to, given every node of the
        snapshot (and the connectivity of the addresses it is connected to, at ``now``): None
        when the policy takes every node (no subsetting), else the union of the subsets the
        policy takes in each group. Call it with the snapshot's nodes after each new snapshot,
        view or config, before :meth:`build`."""
        rings = _rings_of(self._policy)
        if rings is None:
            if self._subsets is not None:
                self._subsets, self._members = None, None
            self._rings = None
            return None
        known, table = self._nodes, self._table
        groups: dict[Selector, set[str]] = {}
        zone_of: dict[str, str] = {}
        locality = self._config.locality
        key = locality.key if locality is not None and self._caller_zone else ""
        for node in nodes:
            info = known.get(id(node))
            if info is None or info.node is not node:
                info = _NodeInfo(node, table)
            for wanted in info.selectors:
                groups.setdefault(wanted, set()).add(node.address)
            if key:
                zone_of[node.address] = node.metadata.get(key, "")
        zones = Zones(key, self._caller_zone, zone_of) if key else None
        clients = self._clients
        self._rings = {
            wanted: rings(sorted(addresses), clients, zones) for wanted, addresses in groups.items()
        }
        self._size_groups(groups, zone_of)
        return self.replan(states, now)

    def _size_groups(self, groups: Mapping[Selector, set[str]], zone_of: Mapping[str, str]) -> None:
        """With zone_aware over subsets, give each group's picker the group's registered nodes
        per locality (``GroupRules.sizes``); a change rebuilds every child picker."""
        rules: dict[Selector, GroupRules] = {}
        if zone_of and self._rules.callers is not None:
            for wanted, addresses in groups.items():
                sizes: dict[str, int] = {}
                for address in addresses:
                    sizes[zone_of[address]] = sizes.get(zone_of[address], 0) + 1
                rules[wanted] = replace(self._rules, sizes=sizes)
        if rules != self._group_rules:
            self._group_rules = rules
            self._groups = {}

    def _rules_of(self, wanted: Selector) -> GroupRules:
        return self._group_rules.get(wanted, self._rules)

    def replan(
        self, states: Mapping[str, ConnState] | None = None, now: float = 0.0
    ) -> frozenset[str] | None:
        """The addresses to keep connections to after a change of connectivity (the states
        of the connected addresses, at ``now``): the last plan's subsets, each reaching past
        its members in TRANSIENT_FAILURE (docs/scale.md); None without subsetting. When a
        member that was down is READY again, call it again at :attr:`recheck_at`."""
        if self._rings is None:
            return None
        if states is not None:
            self.unreachable.update(states, now)
        down = self.unreachable.down
        subsets = {wanted: frozenset(take(rings, down)) for wanted, rings in self._rings.items()}
        if subsets != self._subsets:
            self._subsets, self._members = subsets, None  # regroup every endpoint
        return frozenset().union(*subsets.values())

    @property
    def recheck_at(self) -> float | None:
        """When :meth:`replan` may let a subset shrink back though nothing else changes (a
        member that was down has been READY long enough by then), else None."""
        return self.unreachable.recheck_at if self._rings is not None else None

    def _apply(self) -> None:
        from . import get_policy

        config = self._base.merged(self._layer)
        from_etcd = "load_balancing_config" in self._layer.model_fields_set
        custom = self._custom if not from_etcd else None
        if custom is not None:
            key: tuple[str, object] = ("", id(custom))
        else:
            key = (config.policy_name, config.policy_config)
        if key != self._policy_key:
            self._policy = custom or get_policy(config.policy_name, config.policy_config)
            self._policy_key = key
        self._config = config
        #: Whether some node seen since this config carries the locality key (None: no
        #: node checked yet).
        self._carried: bool | None = None
        self._set_rules()
        self._table = RouteTable(config, self._source)
        self._nodes = {}
        self._members = None  # the groups a node belongs to may differ under this config
        self._subsets = self._rings = None  # until the next plan()

    def _set_rules(self) -> None:
        """What shapes every group's picker, from the config in force; a change rebuilds
        every child picker."""
        config = self._config
        locality = config.locality
        zone = ""
        if locality is not None:
            zone = self._source.get(locality.key) or self._zone.strip()
            if not zone:
                self._warn(
                    f"locality: this channel has no {locality.key!r} (source= or "
                    "$GRPC_ETCD_ZONE): calls are routed without locality"
                )
        callers = None
        view = self._clients
        if locality is not None and locality.mode == "zone_aware" and view is not None:
            callers = view.spread(locality.key) if view.known else None
        self._caller_zone = zone
        rules = GroupRules(self._policy, config.panic_threshold, locality, zone, callers)
        if rules != getattr(self, "_rules", None):
            self._rules = rules
            self._group_rules = {}  # until the next plan()
            self._groups = {}  # every child picker anew

    def _warn(self, message: str) -> None:
        """Log ``message`` once (a bad input that routing works around)."""
        if message not in self._warned:
            self._warned.add(message)
            _log.warning("%s", message)

    def _check_locality(self, fresh: Iterable[Endpoint[T]]) -> None:
        """Warn once when a node new to this build has an empty locality label, and when no
        node seen under this config carries the locality key."""
        locality = self._config.locality
        if locality is None:
            return
        key = locality.key
        for endpoint in fresh:
            value = endpoint.node.metadata.get(key)
            if value is not None:
                self._carried = True
                if not value:
                    self._warn(
                        f"locality: node {endpoint.node.key or endpoint.node.id} has an "
                        f"empty {key!r} label: it counts as in no locality"
                    )
        if not self._carried and self._last:
            self._warn(
                f"locality: no node carries the label {key!r}: calls are routed without locality"
            )

    def build(self, endpoints: Sequence[Endpoint[T]]) -> Picker[T]:
        """The picker for these endpoints (one per node of the snapshot, in any state)."""
        current = {id(e): e for e in endpoints}
        members = self._members
        old = self._groups
        groups: dict[Selector, _Group[T]] = {}
        if members is None:
            members = self._index_all(endpoints)
            for wanted, group_members in members.items():
                listed = tuple(group_members.values())
                previous = old.get(wanted)
                if previous is not None and _same(previous.members, listed):
                    groups[wanted] = previous
                else:
                    groups[wanted] = _Group(listed, self._rules_of(wanted), self._offline(wanted))
        else:
            changes = self._index_changes(current, members)
            for wanted, group_members in members.items():
                previous = old.get(wanted)
                change = changes.get(wanted)
                if previous is not None and change is None:
                    groups[wanted] = previous
                elif wanted is ANY or group_members:
                    listed = tuple(group_members.values())
                    offline = self._offline(wanted)
                    if previous is None or change is None:
                        groups[wanted] = _Group(listed, self._rules_of(wanted), offline)
                    else:
                        groups[wanted] = previous.changed(listed, offline, *change)
            for wanted in [w for w, m in members.items() if not m and w is not ANY]:
                del members[wanted]
        if self._config.locality is not None:
            # Every node once under a new config, then only the nodes new to a build.
            fresh = current.keys() - self._last.keys() if self._carried is not None else current
            self._carried = self._carried or False
            self._last = current
            self._check_locality(current[key] for key in fresh)
        self._last = current
        self._groups = groups
        return self._picker(groups)

    def _join(self, wanted: Selector, info: _NodeInfo, endpoint: Endpoint[T]) -> Endpoint[T] | None:
        """Put ``endpoint`` in group ``wanted`` (in its node's place); the one it replaced."""
        members = self._members
        assert members is not None
        key = id(info.node)
        group = members.get(wanted)
        if group is None:
            group = members[wanted] = {}
        replaced = group.get(key)
        group[key] = endpoint
        if info.offline:
            self._offline_nodes.setdefault(wanted, {})[key] = info
        return replaced

    def _index_all(
        self, endpoints: Sequence[Endpoint[T]]
    ) -> dict[Selector, dict[int, Endpoint[T]]]:
        """Group every endpoint from scratch (the first build, or after a new config)."""
        table = self._table
        known = self._nodes
        nodes: dict[int, _NodeInfo] = {}
        self._members = {ANY: {}}
        self._offline_nodes = {}
        for endpoint in endpoints:
            node = endpoint.node
            info = known.get(id(node))
            if info is None or info.node is not node:
                info = _NodeInfo(node, table)
            nodes[id(node)] = info
            for wanted in self._selectors(info):
                self._join(wanted, info, endpoint)
        self._nodes = nodes
        return self._members

    def _index_changes(
        self, current: dict[int, Endpoint[T]], members: dict[Selector, dict[int, Endpoint[T]]]
    ) -> dict[Selector, tuple[list[Endpoint[T]], list[Endpoint[T]]]]:
        """Apply to the groups only the endpoints that differ (by identity) from the last
        build: O(changed) but for two C-level set differences. Returns, per group touched,
        the endpoints that joined it and those that left."""
        last = self._last
        nodes = self._nodes
        table = self._table
        changes: dict[Selector, tuple[list[Endpoint[T]], list[Endpoint[T]]]] = {}

        def change(wanted: Selector) -> tuple[list[Endpoint[T]], list[Endpoint[T]]]:
            found = changes.get(wanted)
            if found is None:
                found = changes[wanted] = ([], [])
            return found

        everyone = members[ANY]
        for key in current.keys() - last.keys():  # new, or a node's new facts: in place
            endpoint = current[key]
            node = endpoint.node
            info = nodes.get(id(node))
            if info is None or info.node is not node:
                info = nodes[id(node)] = _NodeInfo(node, table)
            for wanted in self._selectors(info):
                replaced = self._join(wanted, info, endpoint)
                added, removed = change(wanted)
                added.append(endpoint)
                if replaced is not None:
                    removed.append(replaced)
        for key in last.keys() - current.keys():
            endpoint = last[key]
            node = endpoint.node
            if everyone.get(id(node), endpoint) is not endpoint:
                continue  # replaced above by the same node's new endpoint
            info = nodes.pop(id(node), None)
            for wanted in info.selectors if info is not None else ():
                group = members.get(wanted)
                if group is not None and group.get(id(node)) is endpoint:
                    del group[id(node)]
                    self._offline_nodes.get(wanted, {}).pop(id(node), None)
                    change(wanted)[1].append(endpoint)
        return changes

    def _selectors(self, info: _NodeInfo) -> tuple[Selector, ...]:
        """The groups a node goes in: those whose subset holds it (all of its groups when
        nothing is subsetted)."""
        subsets = self._subsets
        if subsets is None:
            return info.selectors
        address = info.node.address
        return tuple(s for s in info.selectors if address in subsets.get(s, ()))

    def _offline(self, wanted: Selector) -> frozenset[str]:
        """The methods some node of group ``wanted`` marks offline (usually none)."""
        found = self._offline_nodes.get(wanted)
        if not found:
            return _NONE
        return frozenset().union(*(info.offline for info in found.values()))

    def _picker(self, groups: dict[Selector, _Group[T]]) -> _BalancedPicker[T]:
        table = self._table
        empty = _Group[T]((), self._rules)
        fallback = tuple(groups.get(f, empty) for f in table.fallback)

        def chain(wanted: Selector) -> tuple[_Group[T], ...]:
            return tuple(groups.get(s, empty) for s in fallback_chain(wanted, table.fallback))

        pinned = {s[0][1]: chain(s) for s in groups if len(s) == 1 and s[0][0] == "version"}
        chains = tuple(chain(s) for s in table.selectors)
        return _BalancedPicker(None if table.empty else table, chains, pinned, fallback)
