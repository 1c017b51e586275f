"""The policy interface: a builder turns endpoints into an immutable picker (pure, no I/O).

Modelled on grpc-go's ``balancer/base``: a new picker is built whenever the node set or a
connection's state changes, and the per-call path (``Picker.pick``) reads only what the
builder precomputed - no lock, no scan.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from ..node import Node
from ..routing import CallInfo

__all__ = [
    "NO_MATCH_DETAILS",
    "ConnState",
    "DoneCallback",
    "Endpoint",
    "NoMatchError",
    "NotReadyError",
    "Pick",
    "PickError",
    "Picker",
    "Policy",
    "QueuePicker",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: The Go original's status details when no node has the wanted version.
NO_MATCH_DETAILS = "no match found conn"


class ConnState(enum.Enum):
    """Connectivity of one sub-channel, as gRPC names it."""

    IDLE = "IDLE"
    CONNECTING = "CONNECTING"
    READY = "READY"
    TRANSIENT_FAILURE = "TRANSIENT_FAILURE"
    SHUTDOWN = "SHUTDOWN"


#: Called once when a picked call ends: (grpc status code name, e.g. "OK", latency in seconds).
DoneCallback = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[T]):
    """A node, the sub-channel that reaches it, and that sub-channel's state."""

    node: Node
    subchannel: T
    state: ConnState = ConnState.IDLE
    error: str | None = None


class Pick(NamedTuple, Generic[T_co]):
    """A picker's answer: the sub-channel to use and an optional callback for when the call ends."""

    subchannel: T_co
    done: DoneCallback | None = None


class PickError(Exception):
    """Base of a picker's refusals; the channel turns them into gRPC statuses."""


class NoMatchError(PickError):
    """No registered node can serve the call: ``UNAVAILABLE`` with ``no match found conn``."""

    def __init__(self, details: str = NO_MATCH_DETAILS) -> None:
        super().__init__(details)
        self.details = details


class NotReadyError(PickError):
    """Nodes that match exist but none is READY: wait for the next picker (within the deadline).

    ``failure`` is set when every matching node is in TRANSIENT_FAILURE: a call without
    ``wait_for_ready`` then fails at once with ``UNAVAILABLE`` and this text.
    """

    def __init__(self, failure: str | None = None) -> None:
        super().__init__(failure or "no ready node yet")
        self.failure = failure


class Picker(Protocol[T_co]):
    """Answers one question per call: which sub-channel. Immutable once built."""

    def pick(self, call: CallInfo) -> Pick[T_co]:
        """Choose a sub-channel, or raise :class:`NoMatchError` / :class:`NotReadyError`."""
        ...


class Policy(Protocol):
    """Builds a picker from every endpoint the channel knows (READY or not)."""

    name: str

    def build(self, endpoints: Sequence[Endpoint[T]]) -> Picker[T]:
        """A picker for these endpoints; called on every change of nodes or states."""
        ...


class QueuePicker:
    """The picker before the first snapshot: every call waits for a real one."""

    def pick(self, call: CallInfo) -> Pick[object]:
        raise NotReadyError()
