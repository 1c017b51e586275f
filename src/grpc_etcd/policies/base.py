"""The policy interface: a builder turns ready endpoints into an immutable picker (pure, no I/O).

Modelled on grpc-go's ``balancer/base``: the shared balancer (``_balancer.Balancer``) groups the
nodes, keeps the READY, serving, not ejected ones and decides no-match / not-ready / fallback;
a policy only ever sees usable endpoints and builds a picker whose per-call path reads what the
builder precomputed - no lock, no scan.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

from ..node import Node
from ..routing import CallInfo

__all__ = [
    "NO_MATCH_DETAILS",
    "ConnState",
    "DoneCallback",
    "DoneInfo",
    "Endpoint",
    "NoMatchError",
    "NotReadyError",
    "Pick",
    "PickError",
    "Picker",
    "Policy",
    "QueuePicker",
    "done_info",
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


@dataclass(frozen=True, slots=True)
class DoneInfo:
    """How a picked call ended: its grpc status code name (``"OK"``) and its latency."""

    code: str
    #: Seconds from the pick to the end of the call.
    latency: float


_new_object = object.__new__
# (slots=True: the fields are member descriptors, set here without the frozen __setattr__)
_set_code = cast(Any, DoneInfo).code.__set__
_set_latency = cast(Any, DoneInfo).latency.__set__


def done_info(code: str, latency: float) -> DoneInfo:
    """``DoneInfo(code, latency)``, as the channels make one for every call with a done
    callback: without the frozen dataclass's ``__init__``, whose ``object.__setattr__`` per
    field makes it cost ~4,300 instructions where this costs ~2,600 (callgrind)."""
    info: DoneInfo = _new_object(DoneInfo)
    _set_code(info, code)
    _set_latency(info, latency)
    return info


#: Called exactly once per successful pick when the call ends (also when it never started).
DoneCallback = Callable[[DoneInfo], None]


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[T]):
    """A node, the sub-channel that reaches it, that sub-channel's state, whether the node
    answers health checks as SERVING and is not ejected by outlier detection, and since when
    (``time.monotonic()``) it is READY and serving, if the channel knows."""

    node: Node
    subchannel: T
    state: ConnState = ConnState.IDLE
    error: str | None = None
    serving: bool = True
    ejected: bool = False
    #: When the node last became READY and serving (slow start's clock); None: unknown.
    ready_since: float | None = None

    @property
    def usable(self) -> bool:
        """True when a policy may send calls here: READY, serving and not ejected."""
        return self.state is ConnState.READY and self.serving and not self.ejected


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
    ``wait_for_ready`` then fails at once with ``UNAVAILABLE`` and this text. ``reason`` says
    why calls wait without failing (the nodes are still being read, say): a call whose
    deadline passes while it waits names it.
    """

    def __init__(self, failure: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(failure or reason or "no ready node yet")
        self.failure = failure
        self.reason = reason


class Picker(Protocol[T_co]):
    """Answers one question per call: which sub-channel. Immutable once built."""

    def pick(self, call: CallInfo) -> Pick[T_co]:
        """Choose a sub-channel, or raise :class:`NoMatchError` / :class:`NotReadyError`."""
        ...


class Policy(Protocol):
    """Builds a picker from the usable endpoints of one group of nodes.

    One instance belongs to one channel and may keep per-address stats (calls in flight,
    EWMA latency) across builds: a rebuild after a connectivity change must not reset them.
    """

    name: str

    def build(self, ready: Sequence[Endpoint[T]]) -> Picker[T]:
        """A picker over ``ready``: non-empty, one endpoint per address, every one usable."""
        ...


class QueuePicker:
    """The picker before the first snapshot: every call waits for a real one (``reason``: what
    the channel waits for, named by a call whose deadline passes first)."""

    def __init__(self, reason: str | None = None) -> None:
        self._reason = reason

    def pick(self, call: CallInfo) -> Pick[object]:
        """Never a node: the call waits (``NotReadyError``)."""
        raise NotReadyError(reason=self._reason)
