"""What a refused pick means (pure): fail, and with what, or wait; the pickers of a closed or an
unresolved channel; the words of a deadline that passed waiting.

The call flow (``_flow.py``) asks :func:`refusal`; the twins turn its :class:`Refusal` into
their own failed-call objects.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..policies.base import DoneInfo, NoMatchError, NotReadyError, Pick, PickError
from ..routing import CallInfo

__all__ = [
    "CLOSED",
    "THROWN_AWAY",
    "ChannelClosedError",
    "ClosedPicker",
    "Refusal",
    "UnresolvedPicker",
    "deadline_refusal",
    "refusal",
]


class ChannelClosedError(PickError):
    """The BalancedChannel was closed: no call may start on it."""


class ClosedPicker:
    """Published by ``close()``: wakes every waiting call and refuses new ones."""

    def pick(self, call: CallInfo) -> Pick[Any]:
        raise ChannelClosedError("Cannot invoke RPC on closed channel!")


class UnresolvedPicker:
    """Published while there is no snapshot because the registry cannot read etcd.

    As gRPC does when its resolver reports an error: a call without ``wait_for_ready`` fails
    at once with ``UNAVAILABLE`` and the text; one with it waits for the first snapshot.
    """

    def __init__(self, failure: str) -> None:
        self._failure = failure

    def pick(self, call: CallInfo) -> Pick[Any]:
        raise NotReadyError(self._failure)


class Refusal(NamedTuple):
    """How a call that got no node ends: a grpc status code name and its details.

    ``code`` is ``""`` when the call was made on a closed channel: a usage error, raised at
    once as grpc does (``ValueError`` in the sync twin, ``grpc.aio.UsageError`` in the aio one).
    """

    code: str
    details: str


#: A call made on a channel that was closed before it: a usage error, as in grpc.
CLOSED = Refusal("", "Channel is closed")
#: What a pick's done callback hears when its pick is thrown away before the call started
#: (its sub-channel was retired under it, so the call picks again).
THROWN_AWAY = DoneInfo("CANCELLED", 0.0)


def refusal(exc: PickError, call: CallInfo, *, waited: bool) -> Refusal | None:
    """What a refused pick means for the call: a :class:`Refusal`, or None to wait for the
    next picker (within the deadline)."""
    if isinstance(exc, NotReadyError):
        if exc.failure is not None and not call.wait_for_ready:
            return Refusal("UNAVAILABLE", exc.failure)
        return None
    if isinstance(exc, NoMatchError):
        return Refusal("UNAVAILABLE", exc.details)
    if isinstance(exc, ChannelClosedError):
        # Closed under a waiting call: cancelled, like the calls in flight.
        return Refusal("CANCELLED", "Channel closed!") if waited else CLOSED
    return Refusal("UNAVAILABLE", str(exc))


def deadline_refusal(service: str, call: CallInfo) -> Refusal:
    """How a call ends whose deadline passed while it waited for a ready node."""
    wanted = f"version {call.version!r}" if call.version else "any version"
    return Refusal(
        "DEADLINE_EXCEEDED", f"Deadline Exceeded: no ready node of {service} ({wanted}) in time"
    )
