"""What the sync and asyncio BalancedChannels share: no threads, no asyncio, no sockets.

The twins differ only in how they wait (a monitor thread and ``threading.Event`` versus tasks and
``asyncio.Event``); the bookkeeping - which sub-channel serves which address, the endpoints a
policy sees, what a call asks for, the aggregate connectivity - is written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import grpc

from ..policies.base import ConnState, Endpoint, Pick, PickError
from ..routing import CallInfo, CallRouter  # CallRouter: re-exported until the twins import it
from ..snapshot import Snapshot

__all__ = [
    "CONNECTIVITY_BY_STATE",
    "DEFAULT_DRAIN_TIMEOUT",
    "STATE_BY_CODE",
    "STATE_BY_CONNECTIVITY",
    "CallRouter",
    "ChannelClosedError",
    "ClosedPicker",
    "MethodKey",
    "Subchannel",
    "aggregate_state",
    "build_endpoints",
    "deadline_details",
    "plan_update",
]

C = TypeVar("C")

#: How long a removed node's sub-channel may keep serving the calls already on it (seconds).
#: A clean server stop drains well within this (grpc servers are usually stopped with a grace
#: of a few seconds); the bound only matters for a partitioned node or an endless stream.
DEFAULT_DRAIN_TIMEOUT = 30.0

# cygrpc's connectivity codes are the indexes of grpc.ChannelConnectivity's members.
STATE_BY_CODE: tuple[ConnState, ...] = (
    ConnState.IDLE,
    ConnState.CONNECTING,
    ConnState.READY,
    ConnState.TRANSIENT_FAILURE,
    ConnState.SHUTDOWN,
)
STATE_BY_CONNECTIVITY: dict[grpc.ChannelConnectivity, ConnState] = {
    grpc.ChannelConnectivity.IDLE: ConnState.IDLE,
    grpc.ChannelConnectivity.CONNECTING: ConnState.CONNECTING,
    grpc.ChannelConnectivity.READY: ConnState.READY,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: ConnState.TRANSIENT_FAILURE,
    grpc.ChannelConnectivity.SHUTDOWN: ConnState.SHUTDOWN,
}
CONNECTIVITY_BY_STATE: dict[ConnState, grpc.ChannelConnectivity] = {
    state: connectivity for connectivity, state in STATE_BY_CONNECTIVITY.items()
}

#: Identifies one method signature (kind, name, serializers, registered) within a channel.
MethodKey = tuple[str, str, Any, Any, bool]


class Subchannel(Generic[C]):
    """One real grpc channel to one address, shared by every node registered at that address."""

    __slots__ = (
        "address",
        "callables",
        "channel",
        "code",
        "core",
        "drain_deadline",
        "inflight",
        "retired",
        "state",
        "task",
    )

    def __init__(self, address: str, channel: C) -> None:
        self.address = address
        self.channel = channel
        self.state = ConnState.IDLE
        self.code = -1  # last raw connectivity code seen (sync monitor)
        self.core: Any = None  # sync twin: the cygrpc channel, polled for its state
        # The real multicallables on this channel, created once per method (see MethodKey).
        self.callables: dict[object, Any] = {}
        # One item per call in flight: list.append/pop are atomic, so the sync hot path can
        # count without a lock; len() is read only by the monitor when draining.
        self.inflight: list[None] = []
        # Set once no picker can return this sub-channel any more; it then drains and closes.
        self.retired = False
        self.drain_deadline = 0.0
        self.task: Any = None  # asyncio twin: the task watching this channel's connectivity

    @property
    def error(self) -> str | None:
        """The text a call sees when every matching node is failing."""
        if self.state is ConnState.TRANSIENT_FAILURE:
            return f"failed to connect to {self.address} (TRANSIENT_FAILURE)"
        return None

    def __repr__(self) -> str:
        return f"<Subchannel {self.address} {self.state.value}>"


class ChannelClosedError(PickError):
    """The BalancedChannel was closed: no call may start on it."""


class ClosedPicker:
    """Published by ``close()``: wakes every waiting call and refuses new ones."""

    def pick(self, call: CallInfo) -> Pick[Any]:
        raise ChannelClosedError("Cannot invoke RPC on closed channel!")


def plan_update(snapshot: Snapshot, current: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """The addresses that need a new sub-channel, and those whose sub-channel must go.

    Keyed by address: two records for one address (a server restarted inside its old lease's
    TTL, or one server registered under two versions) share one connection.
    """
    wanted = {node.address for node in snapshot.nodes.values()}
    return [a for a in sorted(wanted) if a not in current], [a for a in current if a not in wanted]


def build_endpoints(
    snapshot: Snapshot | None, subchannels: Mapping[str, Subchannel[C]]
) -> list[Endpoint[Subchannel[C]]]:
    """One endpoint per node (so each node's version is indexed), with its sub-channel's state."""
    if snapshot is None:
        return []
    endpoints: list[Endpoint[Subchannel[C]]] = []
    for node in snapshot.nodes.values():
        sub = subchannels.get(node.address)
        if sub is not None:
            endpoints.append(Endpoint(node, sub, sub.state, sub.error))
    return endpoints


def aggregate_state(
    states: Iterable[ConnState], *, has_snapshot: bool, closed: bool
) -> grpc.ChannelConnectivity:
    """The channel's own connectivity, like grpc's: READY if any sub-channel is READY."""
    if closed:
        return grpc.ChannelConnectivity.SHUTDOWN
    seen = set(states)
    if not has_snapshot:
        # Waiting for the registry's first snapshot is the channel's "resolving" phase.
        return grpc.ChannelConnectivity.CONNECTING
    for state in (ConnState.READY, ConnState.CONNECTING, ConnState.IDLE):
        if state in seen:
            return CONNECTIVITY_BY_STATE[state]
    # Every node failing, or no node at all: calls fail fast, as on a channel in failure.
    return grpc.ChannelConnectivity.TRANSIENT_FAILURE


def deadline_details(service: str, call: CallInfo) -> str:
    """Status details for a call whose deadline passed while it waited for a ready node."""
    wanted = f"version {call.version!r}" if call.version else "any version"
    return f"Deadline Exceeded: no ready node of {service} ({wanted}) in time"
