"""What both BalancedChannels are: their state and their decisions (httpx's ``BaseClient``).

The decisions about a channel's nodes are here; the decisions about one call are its flow's
(``_flow.py``). The twins keep what really differs: how a sub-channel's connectivity is
observed (a monitor thread polling cygrpc, or a task per sub-channel), how a call waits (the
monitor thread's timers, or the loop's), how a call's flow is driven over grpc's sync or asyncio
API, their call objects, and draining.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Generic, TypeVar, cast

import grpc

from ..clients import ClientView
from ..config import ServiceConfig, parse_config
from ..policies import ZONE_ENV, Balancer
from ..policies.base import (
    ConnState,
    Endpoint,
    Picker,
    Policy,
    QueuePicker,
)
from ..routing import CallRouter
from ..snapshot import Snapshot
from ._call import ClosedPicker, UnresolvedPicker
from ._resilience import ChannelResilience
from ._subchannel import CONNECTIVITY_BY_STATE, Subchannel

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "ChannelBase",
    "MethodKey",
    "MultiCallableBase",
    "aggregate_state",
    "build_endpoints",
    "plan_update",
    "sub_wait_for_ready",
]

C = TypeVar("C")

#: How long a removed node's sub-channel may keep serving the calls already on it (seconds).
#: A clean server stop drains well within this (grpc servers are usually stopped with a grace
#: of a few seconds); the bound only matters for a partitioned node or an endless stream.
DEFAULT_DRAIN_TIMEOUT = 30.0

#: Identifies one method signature (kind, name, serializers, registered) within a channel.
MethodKey = tuple[str, str, Any, Any, bool]

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


def sub_wait_for_ready(options: Sequence[tuple[str, Any]]) -> bool | None:
    """The ``wait_for_ready`` every attempt passes to its node's own channel: never to wait
    there (a call picked onto a connection that just died fails over instead; the flow waits
    for a usable node). grpc's default, None, says so unless a grpc service config reaches the
    sub-channel with ``waitForReady`` - only ``options`` can bring one (the DNS resolver asks
    for none unless ``grpc.service_config_disable_resolution`` is 0) - and False costs grpcio
    a new flags int on every call (~4,800 instructions: callgrind), so False only then."""
    for key, value in options:
        if key == "grpc.service_config" or (
            key == "grpc.service_config_disable_resolution" and not value
        ):
            return False
    return None


def _factory(kind: str) -> Callable[..., Any]:
    """``grpc.Channel``'s factory of one kind (``"unary_unary"``, ...), written once."""

    def make(
        self: ChannelBase[Any],
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._multicallable(
            kind, method, request_serializer, response_deserializer, _registered_method
        )

    make.__name__ = kind
    make.__qualname__ = f"ChannelBase.{kind}"
    make.__doc__ = (
        f"A {kind.replace('_', '-')} multicallable whose every call is balanced over the nodes."
    )
    return make


def plan_update(
    snapshot: Snapshot, current: Mapping[str, object], wanted: Set[str] | None = None
) -> tuple[list[str], list[str]]:
    """The addresses that need a new sub-channel, and those whose sub-channel must go.

    Keyed by address: two records for one address (a server restarted inside its old lease's
    TTL, or one server registered under two versions) share one connection. ``wanted``: the
    addresses to keep (the balancer's subsets); None: every node's.
    """
    if wanted is None:
        wanted = {node.address for node in snapshot.nodes.values()}
    return [a for a in sorted(wanted) if a not in current], [a for a in current if a not in wanted]


def build_endpoints(
    snapshot: Snapshot | None,
    subchannels: Mapping[str, Subchannel[C]],
    ejected: Callable[[str], bool] = lambda address: False,
    reuse: dict[str, Endpoint[Subchannel[C]]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Endpoint[Subchannel[C]]]:
    """One endpoint per node (so each node's version is indexed), with its sub-channel's state,
    its health, whether outlier detection ejected it and since when it is READY and serving
    (noted on the sub-channel the first time a build sees it so: every change of state or
    health is followed by a build).

    ``reuse`` (snapshot key -> endpoint, refilled here) keeps the endpoint object of every
    node whose facts did not change, so the balancer sees which ones did by identity and a
    change of one node allocates one endpoint, not one per node.
    """
    if snapshot is None:
        if reuse is not None:
            reuse.clear()
        return []
    old = reuse if reuse is not None else {}
    kept: dict[str, Endpoint[Subchannel[C]]] = {}
    failing = ConnState.TRANSIENT_FAILURE
    ready = ConnState.READY
    now: float | None = None
    for key, node in snapshot.nodes.items():
        address = node.address
        sub = subchannels.get(address)
        if sub is None:
            continue
        if sub.health is None:
            state, serving = sub.state, True
        else:
            state, serving = sub.usable_state, sub.serving
        error = sub.error if sub.state is failing else None
        out = ejected(address)
        if state is ready and serving:
            if sub.ready_since is None:
                sub.ready_since = now = now or clock()
        else:
            sub.ready_since = None
        since = sub.ready_since
        endpoint = old.get(key)
        if (
            endpoint is None
            or endpoint.node is not node
            or endpoint.subchannel is not sub
            or endpoint.state is not state
            or endpoint.serving is not serving
            or endpoint.ejected is not out
            or endpoint.error != error
            or endpoint.ready_since != since
        ):
            endpoint = Endpoint(node, sub, state, error, serving, out, since)
        kept[key] = endpoint
    if reuse is not None:
        reuse.clear()
        reuse.update(kept)
    return list(kept.values())


def aggregate_state(
    states: Iterable[ConnState], *, has_snapshot: bool, closed: bool, unresolved: bool = False
) -> grpc.ChannelConnectivity:
    """The channel's own connectivity, like grpc's: READY if any sub-channel is READY.

    ``unresolved``: there is no snapshot because the registry cannot read etcd.
    """
    if closed:
        return grpc.ChannelConnectivity.SHUTDOWN
    if not has_snapshot:
        # Waiting for the registry's first snapshot is the channel's "resolving" phase; a
        # resolver that reports an error puts grpc's channels in TRANSIENT_FAILURE.
        if unresolved:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.CONNECTING
    # One pass with identity tests (an enum's hash runs Python code): READY ends it at once.
    best = None
    for state in states:
        if state is ConnState.READY:
            return grpc.ChannelConnectivity.READY
        if state is ConnState.CONNECTING or (state is ConnState.IDLE and best is None):
            best = state
    if best is not None:
        return CONNECTIVITY_BY_STATE[best]
    # Every node failing, or no node at all: calls fail fast, as on a channel in failure.
    return grpc.ChannelConnectivity.TRANSIENT_FAILURE


def _node_states(endpoints: Sequence[Endpoint[Any]]) -> dict[str, int]:
    """Nodes per state for the metrics: ejected, else not_serving, else the connectivity."""
    ready = connecting = idle = failing = not_serving = ejected = 0
    for endpoint in endpoints:  # identity tests: an enum's hash runs Python code
        state = endpoint.state
        if endpoint.ejected:
            ejected += 1
        elif not endpoint.serving:
            not_serving += 1
        elif state is ConnState.READY:
            ready += 1
        elif state is ConnState.CONNECTING:
            connecting += 1
        elif state is ConnState.IDLE:
            idle += 1
        elif state is ConnState.TRANSIENT_FAILURE:
            failing += 1
    counts = {"ready": ready, "connecting": connecting, "idle": idle}
    counts.update(transient_failure=failing, not_serving=not_serving, ejected=ejected)
    shutdown = len(endpoints) - sum(counts.values())
    if shutdown:
        counts["shutdown"] = shutdown
    return counts


class ChannelBase(Generic[C]):
    """The state of a BalancedChannel and every decision about it that is not I/O.

    A twin sets ``_lock`` (a real lock, or a no-op on the event loop's only thread) before
    calling ``__init__``, fills ``_MULTICALLABLES`` and implements the hooks at the end.
    """

    #: The multicallable class of each kind ("unary_unary", ...), set by each twin.
    _MULTICALLABLES: ClassVar[Mapping[str, Callable[..., Any]]]
    _LABEL: ClassVar[str] = "BalancedChannel"
    _lock: AbstractContextManager[Any]

    def __init__(
        self,
        service: str,
        *,
        policy: str | Policy | None,
        version: str | None,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, Any]] | None,
        drain_timeout: float,
        config: ServiceConfig | Mapping[str, Any] | None,
        source: Mapping[str, str] | None,
    ) -> None:
        self._service = service
        if config is not None and not isinstance(config, ServiceConfig):
            config = parse_config(config)
        self._balancer = Balancer[Subchannel[C]](
            config, policy=policy, source=source, zone=os.environ.get(ZONE_ENV)
        )
        self._version = version or None
        self._credentials = credentials
        self._options = tuple(options) if options else ()
        self._sub_wait_for_ready = sub_wait_for_ready(self._options)
        self._drain_timeout = drain_timeout
        self._snapshot: Snapshot | None = None
        self._subs: dict[str, Subchannel[C]] = {}
        # Snapshot key -> the endpoint last handed to the balancer (reused while unchanged).
        self._endpoints: dict[str, Endpoint[Subchannel[C]]] = {}
        # The per-call path reads only this attribute: no lock, no scan.
        self._picker: Picker[Subchannel[C]] = cast("Picker[Subchannel[C]]", QueuePicker())
        #: What a call's flow reads the picker in force with, whenever it picks.
        self._pickers: Callable[[], Picker[Subchannel[C]]] = lambda: self._picker
        self._connectivity = grpc.ChannelConnectivity.CONNECTING
        self._unresolved: str | None = None  # why there is no snapshot (etcd unreachable)
        self._resolving: str | None = None  # where the first snapshot is to come from
        self._close_callbacks: list[Callable[[], object]] = []
        self._method_keys: dict[MethodKey, object] = {}
        self._closed = False
        self._recheck_due: float | None = None  # when a recheck of the subsets is scheduled
        self._resilience = ChannelResilience(service, self._republish_soon)
        self._resilience.configure(self._balancer.config)

    # ------------------------------------------------------------ public, beyond grpc

    @property
    def service(self) -> str:
        """The service whose nodes this channel balances over."""
        return self._service

    @property
    def snapshot(self) -> Snapshot | None:
        """The node set the channel follows now (None until the first one arrives)."""
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        """Follow a new node set: connect to new nodes, stop picking removed ones.

        Returns once no new call can go to a removed node; a removed node's calls in flight
        keep running for at most ``drain_timeout`` seconds before its connection closes.
        """
        if snapshot.service and snapshot.service != self._service:
            raise ValueError(
                f"snapshot of {snapshot.service!r} given to the channel of {self._service!r}"
            )
        with self._lock:
            if self._closed:
                return
            opened = self._follow(snapshot)
        self._after_update(opened)

    @property
    def needs_clients(self) -> bool:
        """True when the config in force needs the view of the service's calling channels
        (``deterministic_subsetting``, ``zone_aware`` locality): the registry then keeps this
        channel's client key and feeds :meth:`update_clients`."""
        return self._balancer.needs_clients

    @property
    def client_labels(self) -> dict[str, str]:
        """The labels this channel's client key carries: its ``source`` labels, with its
        locality under the config's ``locality.key`` (docs/scale.md)."""
        return self._balancer.client_labels

    def update_clients(self, view: ClientView) -> None:
        """Follow a new view of the calling channels (docs/scale.md): with
        subsetting, this channel's subsets and so its connections may change; with
        zone_aware, the share of calls each locality gets."""
        with self._lock:
            if self._closed:
                return
            self._balancer.update_clients(view)
            opened = self._follow(self._snapshot) if self._snapshot is not None else []
        self._after_update(opened)

    def resolver_error(self, error: str | None) -> None:
        """Tell the channel that the registry cannot read its nodes (``None``: it can again).

        Until the first snapshot, calls without ``wait_for_ready`` then fail at once with
        ``UNAVAILABLE`` and details naming the service and ``error`` (calls with it wait for
        the snapshot). Once a snapshot has come, the last one stands and this changes nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._unresolved = None if error is None else f"cannot resolve {self._service}: {error}"
            if self._snapshot is None:
                self._publish()
        self._after_update([])

    def _resolving_from(self, source: str) -> None:
        """The registry reads this channel's nodes from ``source`` (``etcd at HOST:PORT``): a
        call whose deadline passes before the first snapshot says that it has not answered."""
        with self._lock:
            self._resolving = f"{source} has not answered yet: no nodes of {self._service} read"
            if self._snapshot is None and self._unresolved is None and not self._closed:
                self._publish()

    @property
    def config(self) -> ServiceConfig:
        """The service config in force: the code's, with etcd's keys over it."""
        return self._balancer.config

    def configure(self, config: ServiceConfig | None) -> None:
        """Lay ``config`` (the document from etcd) over the code's config, key by key; ``None``
        returns to the code's. Calls picked from now on follow it, health checking, outlier
        detection and retry policies included."""
        with self._lock:
            if self._closed:
                return
            self._balancer.configure(config if config is not None else ServiceConfig())
            self._resilience.configure(self._balancer.config)
            self._follow_health(list(self._subs.values()))
            if self._snapshot is not None:
                opened = self._follow(self._snapshot)  # a new policy may subset differently
            else:
                opened = []
                self._publish()
        self._after_update(opened)
        self._after_configure()

    def subchannel_states(self) -> dict[str, grpc.ChannelConnectivity]:
        """The connectivity of the connection to each address this channel keeps one to:
        every node's, or with subsetting exactly the nodes of its subsets."""
        with self._lock:
            subs = list(self._subs.values())
        return {sub.address: CONNECTIVITY_BY_STATE[sub.state] for sub in subs}

    # ------------------------------------------------------------ the four factories

    unary_unary = _factory("unary_unary")
    unary_stream = _factory("unary_stream")
    stream_unary = _factory("stream_unary")
    stream_stream = _factory("stream_stream")

    def __repr__(self) -> str:
        return (
            f"<{self._LABEL} {self._service} nodes={len(self._snapshot or ())} "
            f"{self._connectivity.name}>"
        )

    # ------------------------------------------------------------ shared internals

    def _multicallable(
        self,
        kind: str,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> Any:
        return self._MULTICALLABLES[kind](
            self, kind, method, request_serializer, response_deserializer, registered
        )

    def _method_key(self, key: MethodKey) -> object:
        token = self._method_keys.get(key)
        if token is None:
            token = self._method_keys.setdefault(key, object())
        return token

    def _follow(self, snapshot: Snapshot) -> list[Subchannel[C]]:
        """Connect to the nodes of ``snapshot`` the balancer plans for (all, or its subsets),
        publish a picker, retire what is no longer wanted; the sub-channels opened (hold the
        lock)."""
        wanted = self._balancer.plan(snapshot.nodes.values(), self._states(), time.monotonic())
        return self._connect(snapshot, wanted)

    def _states(self) -> dict[str, ConnState]:
        """The connectivity of each connected address (hold the lock)."""
        return {address: sub.state for address, sub in self._subs.items()}

    def _connect(self, snapshot: Snapshot, wanted: Set[str] | None) -> list[Subchannel[C]]:
        """Open what ``wanted`` adds, publish, retire what it drops (see :meth:`_follow`)."""
        added, gone = plan_update(snapshot, self._subs, wanted)
        opened = []
        for address in added:
            sub = self._subs[address] = self._open(address)
            opened.append(sub)
        retired = [self._subs.pop(address) for address in gone]
        self._resilience.track(
            self._subs, {node.address: node.version for node in snapshot.nodes.values()}
        )
        self._follow_health(opened)
        self._snapshot = snapshot
        self._publish_picker()
        # Only now, with a picker that cannot return them published, mark them retired:
        # a call that picked one from an older picker sees the flag and picks again.
        for sub in retired:
            sub.retired = True
            self._stop_health(sub)
        self._retire(retired)
        self._recheck_later()
        return opened

    def _publish(self) -> None:
        """Build and publish a new picker; wake the calls waiting for one (hold the lock).

        With subsetting, a change of connectivity may first move the subsets past the members
        this channel cannot reach, or back (the balancer decides: ``Balancer.replan``); this
        opens and retires what it says."""
        snapshot = self._snapshot
        if snapshot is not None and not self._closed and self._balancer.subsetting:
            wanted = self._balancer.replan(self._states(), time.monotonic())
            if wanted is not None:
                if wanted != self._subs.keys():
                    self._after_update(self._connect(snapshot, wanted))
                    return
                self._recheck_later()
        self._publish_picker()

    def _recheck_later(self) -> None:
        """Publish again when the balancer says a subset may shrink back with no other change
        (on the twin's own clock: :meth:`_call_later`)."""
        due = self._balancer.recheck_at
        if due is None or (self._recheck_due is not None and self._recheck_due <= due):
            return
        self._recheck_due = due
        delay = max(0.0, due - time.monotonic()) + 0.001  # a timer may fire a hair early
        self._call_later(delay, self._recheck)

    def _recheck(self) -> None:
        self._recheck_due = None
        self._republish()

    def _publish_picker(self) -> None:
        """Build and publish a new picker; wake the calls waiting for one (hold the lock)."""
        picker: Any
        if self._closed:
            picker = ClosedPicker()
        elif self._snapshot is None and self._unresolved is not None:
            picker = UnresolvedPicker(self._unresolved)
        elif self._snapshot is None:
            picker = QueuePicker(self._resolving)
        else:
            endpoints = build_endpoints(
                self._snapshot, self._subs, self._resilience.is_ejected, self._endpoints
            )
            picker = self._resilience.wrap(self._balancer.build(endpoints))
            if self._resilience.counts_nodes:
                self._resilience.count_nodes(_node_states(endpoints))
        self._picker = picker
        self._connectivity = aggregate_state(
            (sub.state for sub in self._subs.values()),
            has_snapshot=self._snapshot is not None,
            closed=self._closed,
            unresolved=self._unresolved is not None,
        )
        self._wake()

    def _begin_close(self) -> list[Subchannel[C]] | None:
        """Mark the channel closed and publish that; the sub-channels to close (None: it was
        closed already)."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._publish()
            subs = list(self._subs.values())
            self._subs.clear()
            for sub in subs:
                self._stop_health(sub)
            return subs

    def _republish(self) -> None:
        """A node's health or ejection changed: publish a picker that knows it."""
        with self._lock:
            if not self._closed:
                self._publish()

    def _follow_health(self, subs: Iterable[Subchannel[C]]) -> None:
        """Start, stop or re-aim each sub-channel's health watch to match the config."""
        name = self._resilience.health_service
        for sub in subs:
            if sub.health is not None and sub.health.service_name != name:
                self._stop_health(sub)
            if name is not None and sub.health is None:
                sub.health = self._watch_health(sub, name)

    @staticmethod
    def _stop_health(sub: Subchannel[C]) -> None:
        health, sub.health = sub.health, None
        if health is not None:
            health.close()

    # ------------------------------------------------------------ the twins' hooks

    def _open(self, address: str) -> Subchannel[C]:
        """A new sub-channel to ``address`` (under the lock)."""
        raise NotImplementedError

    def _retire(self, subs: list[Subchannel[C]]) -> None:
        """Start draining sub-channels no picker returns any more (under the lock)."""
        raise NotImplementedError

    def _after_update(self, opened: list[Subchannel[C]]) -> None:
        """After an update or a resolver error, outside the lock: watch what was opened."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake every call waiting for a new picker (under the lock)."""
        raise NotImplementedError

    def _republish_soon(self) -> None:
        """A node was ejected or came back: publish a new picker soon, on the monitor (thread
        or loop), not on the thread whose call ended (any thread, no lock held)."""
        raise NotImplementedError

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (it takes the lock) in ``delay`` seconds on the twin's monitor:
        the sync monitor thread's timers, the loop's ``call_later`` (under the lock)."""
        raise NotImplementedError

    def _watch_health(self, sub: Subchannel[C], service_name: str) -> Any:
        """A health watch on ``sub`` that calls ``self._republish`` on a change (under the lock)."""
        raise NotImplementedError

    def _after_configure(self) -> None:
        """After a new config, outside the lock: (re)start the outlier detector's timer."""


class MultiCallableBase(Generic[C]):
    """What every multicallable of both twins shares: the call's router and the per-method
    multicallable on each sub-channel, created once."""

    #: The twin serializes the request messages itself (to keep them for a replay): the
    #: sub-channel's multicallable then takes them as bytes.
    _raw_requests: ClassVar[bool] = False

    def __init__(
        self,
        channel: ChannelBase[C],
        kind: str,
        method: str,
        request_serializer: Serializer,
        response_deserializer: Deserializer,
        registered: bool | None,
    ) -> None:
        self._kind = kind
        self._method = method
        self._serializer = request_serializer
        self._deserializer = response_deserializer
        self._registered = bool(registered)
        self._resolve = CallRouter(method, channel._version).resolve
        self._key = channel._method_key(
            (kind, method, request_serializer, response_deserializer, self._registered)
        )

    def _bind(self, sub: Subchannel[C]) -> Any:
        """Create this method's multicallable on ``sub`` once; later calls reuse it."""
        callable_ = sub.callables[self._key] = self._new_callable(sub)
        return callable_

    def _new_callable(self, sub: Subchannel[C]) -> Any:
        """A new multicallable of this method on ``sub``'s own channel."""
        factory = getattr(sub.channel, self._kind)
        serializer = None if self._raw_requests else self._serializer
        if self._registered:
            return factory(self._method, serializer, self._deserializer, True)
        # grpcio <= 1.62 rejects _registered_method: pass it only when it is set.
        return factory(self._method, serializer, self._deserializer)
