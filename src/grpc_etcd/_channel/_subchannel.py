"""One real grpc channel to one address, and the tables between grpc's and our states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from ..policies.base import ConnState

__all__ = [
    "CONNECTIVITY_BY_STATE",
    "STATE_BY_CODE",
    "STATE_BY_CONNECTIVITY",
    "Subchannel",
]

C = TypeVar("C")

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
#: By the code cygrpc's check_connectivity_state() answers: grpc's own enum carries it first.
STATE_BY_CODE: dict[int, ConnState] = {
    connectivity.value[0]: state for connectivity, state in STATE_BY_CONNECTIVITY.items()
}


class Subchannel(Generic[C]):
    """One real grpc channel to one address, shared by every node registered at that address."""

    __slots__ = (
        "address",
        "callables",
        "channel",
        "code",
        "core",
        "drain_deadline",
        "health",
        "inflight",
        "ready_since",
        "release",
        "retired",
        "state",
        "task",
    )

    def __init__(self, address: str, channel: C) -> None:
        self.address = address
        self.channel = channel
        self.state = ConnState.IDLE
        self.code = -1  # last raw connectivity code seen (sync monitor)
        #: Sync twin: the cygrpc channel, polled for its state (None: grpc's subscribe()).
        self.core: Any = None
        # The real multicallables on this channel, created once per method (see MethodKey).
        self.callables: dict[object, Any] = {}
        # One item per call in flight: list.append/pop are atomic, so the sync hot path can
        # count without a lock; len() is read when draining.
        inflight: list[None] = []
        self.inflight = inflight
        # A call's done callback that takes it off the count: made once, not once per call.
        self.release: Callable[[object], object] = lambda _ended: inflight.pop()
        # Set once no picker can return this sub-channel any more; it then drains and closes.
        self.retired = False
        self.drain_deadline = 0.0
        self.task: Any = None  # asyncio twin: the task watching this channel's connectivity
        self.health: Any = None  # a HealthWatch when the config asks for health checking
        #: When build_endpoints first saw it READY and serving (time.monotonic()), else None.
        self.ready_since: float | None = None

    @property
    def serving(self) -> bool:
        """False while the node's health service answers anything but SERVING."""
        return self.health is None or self.health.serving

    @property
    def usable_state(self) -> ConnState:
        """The state a policy sees: READY only once a health check (if any) has answered;
        until then CONNECTING, as gRPC reports a sub-channel whose health is unknown."""
        if self.state is ConnState.READY and self.health is not None and not self.health.answered:
            return ConnState.CONNECTING
        return self.state

    @property
    def error(self) -> str | None:
        """The text a call sees when every matching node is failing."""
        if self.state is ConnState.TRANSIENT_FAILURE:
            return f"failed to connect to {self.address} (TRANSIENT_FAILURE)"
        return None

    def __repr__(self) -> str:
        return f"<Subchannel {self.address} {self.state.value}>"
