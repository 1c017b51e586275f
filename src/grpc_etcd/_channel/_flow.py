"""One call's flow (pure, sans-io like h11): every decision about a call after its first pick.

A :class:`CallFlow` decides, for one call: wait for a node or fail (the first refused pick
decides), which node next (avoiding the ones tried; after a failed connection, waiting a while
for a picker that offers another), retry or hedge or commit, the retry throttle's tokens,
pushback, transparent retry, the deadline (from one starting point) and the pick's done
callback, exactly once per attempt. It never touches grpc, a thread or an event loop:
a twin tells it what happened and does what it answers.

How a twin drives it
--------------------
::

    flow = CallFlow(channel._pickers, info, plan, now=clock(), timeout=timeout)
    actions = flow.start(clock())          # or flow.start(now, pick) with a pick already made
    while not flow.finished:               # (a callback-driven twin loops in its callbacks)
        for action in actions:
            Start(attempt)  -> start the grpc call on attempt.subchannel with attempt.timeout
                               (keep it in attempt.call; the flow has told the pick's observed
                               done callback that its attempt starts); report what it does:
                               flow.on_response(attempt, now) when its response headers or
                               first message arrive; flow.on_status(attempt, status, now) when
                               it ends, whatever happened (cancelled ones too)
            Cancel(attempt) -> cancel attempt.call (its status still comes to on_status)
            Commit(attempt) -> the call is this attempt's from now on: hand its responses to the
                               caller, stop keeping requests for a replay
            Wait(until, picker) -> from now on, wake the flow at ``until`` (None: no timer) with
                               flow.on_time(now), and if ``picker`` when the channel publishes
                               a new picker with flow.on_picker(now); replaces the last Wait
            Finish(attempt, refusal) -> the call ends: with that attempt's outcome (its response
                               or its error, as the twin got them), or with ``refusal`` (a status
                               of ours: no node, deadline, cancelled) when attempt is None
        actions = <the answer to the next event>

Every event returns the actions to do now, in order. ``status_of`` (in ``_resilience``) turns a
grpc call or error into the :class:`Status` the flow reads. The application's own cancel is
:meth:`CallFlow.cancel`. A request stream keeps the messages it sent until the Commit, to send
them again on a new attempt: it tells :meth:`CallFlow.kept` the size of each one, and past
gRPC's limits (256 KiB per call, 16 MiB per channel: :class:`ReplayBudget`) the flow commits the
call to its attempt. The flow is not thread-safe: one event at a time.

The hot path may stay inlined in a twin (a pick that succeeds with nothing to apply yet: the
plan is ``inline``, the sub-channel not retired): the twin starts that attempt itself and, should
it fail, makes a flow and hands it over with :meth:`CallFlow.adopt`. A plan with a retry policy
is ``inline`` too (nothing applies before the first attempt ends), and so is hedging with a
``hedgingDelay``: then, should the attempt last ``hedge_delay``, the twin adopts it and tells the
flow :meth:`CallFlow.on_time`, which decides the hedge. An attempt there that ends with no
flow (a success, or it could not start) takes the flow's decision: :meth:`CallPlan.inline_ended`
(its done callback, the throttle's credit).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ..config import HedgingPolicy, RetryPolicy
from ..policies.base import DoneCallback, NotReadyError, Pick, Picker, PickError, done_info
from ..retry import CallRetry, RetryThrottle, never_reached_server, pick_avoiding, pushback_delay
from ..routing import CallInfo
from ._call import THROWN_AWAY, Refusal, deadline_refusal, refusal

__all__ = [
    "CANCELLED",
    "OK",
    "Action",
    "Attempt",
    "CallFlow",
    "CallPlan",
    "Cancel",
    "Commit",
    "Finish",
    "ReplayBudget",
    "Start",
    "Status",
    "Wait",
]


class Node(Protocol):
    """What the flow reads and counts of a picked sub-channel."""

    address: str
    #: Set once no picker returns it any more: a pick of it is given back and made again.
    retired: bool
    #: One item per attempt in flight on it (the twins drain on its length).
    inflight: list[None]


S = TypeVar("S", bound=Node)


class Status(NamedTuple):
    """How one attempt ended, as the flow reads it."""

    code: str
    details: str = ""
    #: The ``grpc-retry-pushback-ms`` trailer, if the server sent one.
    pushback: str | None = None
    #: Response headers (or a message) arrived before the status: the call had reached the
    #: server's application, and gRFC A6 commits it.
    got_response: bool = False


OK = Status("OK")
#: A call the application cancelled: grpc's own status and text.
CANCELLED = Refusal("CANCELLED", "Locally cancelled by application!")


class Attempt(Generic[S]):
    """One attempt of a call: the node it went to, its pick's done callback and its timeout."""

    __slots__ = ("call", "done", "ended", "number", "started", "subchannel", "timeout")

    def __init__(
        self,
        subchannel: S,
        done: DoneCallback | None,
        number: int,
        started: float,
        timeout: float | None,
    ) -> None:
        self.subchannel = subchannel
        self.done = done
        #: 0 for the first attempt, then 1, 2, ... in the order they started.
        self.number = number
        #: When it started, on the flow's clock (its done callback's latency runs from here).
        self.started = started
        #: The seconds to give the grpc call (what is left of the call's deadline; None: none).
        self.timeout = timeout
        self.ended = False
        #: The twin's own grpc call object for this attempt (the flow never reads it).
        self.call: Any = None

    def __repr__(self) -> str:
        return (
            f"<Attempt {self.number} on {self.subchannel.address}{' ended' if self.ended else ''}>"
        )


class Start(NamedTuple):
    """Start ``attempt``: its grpc call on ``attempt.subchannel`` with ``attempt.timeout``."""

    attempt: Attempt[Any]


class Cancel(NamedTuple):
    """Cancel ``attempt``'s grpc call (it lost a hedge, or the call ended without it)."""

    attempt: Attempt[Any]


class Commit(NamedTuple):
    """The call is ``attempt``'s for good: no other attempt will follow or stay."""

    attempt: Attempt[Any]


class Wait(NamedTuple):
    """Wake the flow at ``until`` (None: no timer) and, if ``picker``, on a new picker."""

    until: float | None
    picker: bool


class Finish(NamedTuple):
    """The call ends with ``attempt``'s outcome, or (``attempt`` None) with ``refusal``."""

    attempt: Attempt[Any] | None
    refusal: Refusal | None = None


Action = Start | Cancel | Commit | Wait | Finish

_NO_WAIT = Wait(None, False)

#: gRPC's limits on the request messages kept for a replay: per call
#: (``grpc.per_rpc_retry_buffer_size``) and per channel (``grpc.retry_buffer_size``), in bytes.
CALL_REPLAY_LIMIT = 256 * 1024
CHANNEL_REPLAY_LIMIT = 16 * 1024 * 1024


class ReplayBudget:
    """The bytes of request messages a channel's calls keep for a replay, shared by its calls.

    Every change happens under ``lock`` (a ``threading.Lock`` where calls run on several
    threads; none by default), so concurrent calls lose no byte.
    """

    def __init__(
        self,
        limit: int = CHANNEL_REPLAY_LIMIT,
        *,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.limit = limit
        #: Bytes kept now by all the channel's calls.
        self.used = 0
        self._lock = lock if lock is not None else contextlib.nullcontext()

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes kept; whether the channel is still within its limit."""
        with self._lock:
            self.used = used = self.used + size
        return used <= self.limit

    def give_back(self, size: int) -> None:
        """``size`` bytes are no longer kept (their call committed or ended)."""
        with self._lock:
            self.used -= size


class CallPlan:
    """What the service config says of one method's calls, resolved once per config.

    ``inline`` when nothing applies before the first attempt ends or has lasted ``hedge_delay``
    (no default timeout, no hedging all at once): a twin may then run a call's first attempt on
    its inlined hot path (see the module docstring).
    """

    __slots__ = (
        "budget",
        "ended",
        "hedge_delay",
        "hedging",
        "inline",
        "refused",
        "retry",
        "rng",
        "service",
        "throttle",
        "timeout",
    )

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        hedging: HedgingPolicy | None = None,
        timeout: float | None = None,
        throttle: RetryThrottle | None = None,
        service: str = "",
        ended: Callable[[CallFlow[Any]], None] | None = None,
        refused: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        budget: ReplayBudget | None = None,
    ) -> None:
        if retry is not None and hedging is not None:
            raise ValueError("a call is retried or hedged, not both")
        self.retry = retry
        self.hedging = hedging
        #: The method's default deadline (``methodConfig[].timeout``), in seconds.
        self.timeout = timeout
        #: The channel's retry token bucket (``retryThrottling``), shared by all its calls.
        self.throttle = throttle
        #: Named in the details of a call that found no ready node in time.
        self.service = service
        #: Told once when a call that went through a flow ends (the A96 retry metrics).
        self.ended = ended
        #: Told the status code of a call refused at the pick (the picks metric).
        self.refused = refused
        #: Draws the retry backoff's jitter (shared: seeding one per call costs a syscall).
        self.rng = rng if rng is not None else random.Random()
        #: The channel's bytes of request messages kept for replays (None: the call's own limit
        #: only).
        self.budget = budget
        delay = hedging.hedging_delay if hedging is not None else None
        #: When a hedge may be due after an inlined first attempt started (None: never).
        self.hedge_delay = delay
        self.inline = timeout is None and (delay is None or delay > 0)

    def succeeded(self) -> None:
        """A call ended OK: gRFC A6 gives every successful call's token back, any method."""
        throttle = self.throttle
        if throttle is not None:
            throttle.on_success()

    def inline_ended(self, pick: Pick[Any], code: str, latency: float) -> None:
        """A hot path's attempt (``pick``, counted in flight) ended with no flow - OK, or it
        could not start: what a flow would do of it (its done callback, the throttle's credit).
        """
        sub, done = pick
        sub.inflight.pop()
        if done is not None:
            done(done_info(code, latency))
        throttle = self.throttle
        if throttle is not None and code == "OK":  # succeeded(), inlined: a hot path's
            throttle.on_success()


class CallFlow(Generic[S]):
    """The decisions of one call, from its first pick to its end (see the module docstring).

    ``pickers()`` returns the channel's current picker; ``now`` is when the call started, on
    the clock the twin feeds every event with; ``timeout`` the caller's (None: none), bounded
    by the plan's.
    """

    def __init__(
        self,
        pickers: Callable[[], Picker[S]],
        info: CallInfo,
        plan: CallPlan,
        *,
        now: float,
        timeout: float | None,
    ) -> None:
        self._pickers = pickers
        self._info = info
        self._plan = plan
        if plan.timeout is not None and (timeout is None or plan.timeout < timeout):
            timeout = plan.timeout
        #: When the call's deadline passes (None: it has none), on the twin's clock.
        self.deadline = None if timeout is None else now + timeout
        #: Every attempt started, in order.
        self.attempts: list[Attempt[S]] = []
        #: The attempt the call is committed to (its first response came), if any.
        self.committed: Attempt[S] | None = None
        #: True once the call's outcome is decided (a Finish was returned).
        self.finished = False
        self._hedging = plan.hedging
        # The retry policy's state (and the transparent retry's, whatever the policy).
        self._retry = CallRetry(plan.retry, plan.throttle, rng=plan.rng)
        self._live = 0  # attempts started and not ended
        self._next_at: float | None = None  # when the next attempt is due (backoff, hedge)
        self._want_node = False  # the next attempt waits for a picker with a node for it
        self._want_hedge = False  # ... and it is a hedge (an untried node or none)
        # The last attempt failed at its connection: the next goes to an untried node, or
        # waits (until _repick_at at the latest) for a picker that knows of that connection.
        self._avoid_tried = False
        self._repick_at: float | None = None
        self._waited = False  # the call has waited for a picker at least once
        self._cause: str | None = None  # why no node was ready, for the deadline's details
        self._no_more = False  # no attempt may start any more (pushback, committed)
        self._armed = _NO_WAIT
        self._refusal: PickError | None = None
        self._kept = 0  # bytes of request messages kept for a replay, counted in the budget
        self._overflow = False  # they passed a limit: the call commits to its next attempt

    # ------------------------------------------------------------ what the flow says

    @property
    def hedged(self) -> bool:
        """Whether the call is hedged (its plan has a hedging policy)."""
        return self._hedging is not None

    @property
    def tried(self) -> set[str]:
        """The addresses this call's attempts went to."""
        return self._retry.tried

    @property
    def retries(self) -> int:
        """Retries made under the retry policy (gRFC A96's ``grpc.client.call.retries``)."""
        if self._hedging is not None:
            return 0
        return max(0, self._retry.attempts - 1)

    @property
    def hedges(self) -> int:
        """Hedged attempts sent after the first (A96's ``grpc.client.call.hedges``)."""
        if self._hedging is None:
            return 0
        return max(0, self._retry.attempts - 1)

    @property
    def transparent(self) -> int:
        """Transparent retries made (at most one: gRPC's rule)."""
        return self._retry.transparent

    def left(self, now: float) -> float | None:
        """Seconds until the deadline (at least 0), or None when the call has none."""
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - now)

    # ------------------------------------------------------------ events

    def start(self, now: float, pick: Pick[S] | PickError | None = None) -> list[Action]:
        """Begin the call: pick a node (or use ``pick``, the twin's own first pick or the
        refusal it met) and start the first attempt, wait for a node, or fail."""
        return self._next_attempt(now, pick)

    def adopt(self, pick: Pick[S], started: float) -> Attempt[S]:
        """Take over an attempt the twin started itself on its hot path at ``started``
        (already counted in flight on its sub-channel); report its end with :meth:`on_status`.
        With hedging, the next hedge is due ``hedgingDelay`` after ``started``, as if the flow
        had started it: :meth:`on_time` sends it."""
        sub, done = pick
        attempt = self._add(sub, done, started, counted=True)
        self._hedge_due(started)
        return attempt

    def on_response(self, attempt: Attempt[S], now: float) -> list[Action]:
        """``attempt`` received its response headers or first message: it wins the call."""
        if self.finished or self.committed is not None or attempt.ended:
            return []
        return self._commit(attempt)

    def kept(self, size: int, now: float) -> list[Action]:
        """The twin keeps one more request message of ``size`` bytes for a replay. Past the
        call's limit or the channel's budget the call commits to its oldest attempt in flight
        (with none in flight, to the next one to start): the twin keeps no more."""
        if self.finished or self.committed is not None or self._overflow:
            return []
        self._kept += size
        budget = self._plan.budget
        within = budget.take(size) if budget is not None else True
        if within and self._kept <= CALL_REPLAY_LIMIT:
            return []
        for attempt in self.attempts:
            if not attempt.ended:
                return self._commit(attempt)
        self._overflow = True
        return []

    def on_status(self, attempt: Attempt[S], status: Status, now: float) -> list[Action]:
        """``attempt`` ended with ``status`` (reported once; a second report is ignored)."""
        if attempt.ended:
            return []
        attempt.ended = True
        self._live -= 1
        attempt.subchannel.inflight.pop()
        if attempt.done is not None:
            attempt.done(done_info(status.code, now - attempt.started))
        if self.finished:
            return []
        committed = self.committed
        if committed is not None:
            return self._finish_committed(attempt, status) if attempt is committed else []
        if status.code == "OK" or status.got_response:
            return self._finish_committed(attempt, status)  # A6: a response commits the call
        if self._hedging is not None:
            return self._hedge_failed(attempt, status, now)
        return self._retry_failed(attempt, status, now)

    def on_time(self, now: float) -> list[Action]:
        """The time asked for by the last Wait came (or some time passed)."""
        if self.finished:
            return []
        repick = self._repick_at
        if repick is not None and now >= repick:  # no new picker: a tried node will do
            self._repick_at = None
            self._want_node = False
            return self._next_attempt(now)
        due = self._next_at
        if due is not None and now >= due:
            self._next_at = None
            hedging = self._hedging
            if hedging is None:
                return self._next_attempt(now)  # the backoff is over
            if self._no_more or self._retry.attempts >= hedging.attempts:
                return self._hedge_later(now)
            if not self._may_hedge():
                return self._hedge_later(now, again=True)
            return self._next_attempt(now, hedge=True)
        deadline = self.deadline
        if self._want_node and not self._live and deadline is not None and now >= deadline:
            return self._refuse(self._deadline_refusal())
        return self._wait()

    def on_picker(self, now: float) -> list[Action]:
        """The channel published a new picker: a call waiting for a node picks again."""
        if self.finished or not self._want_node:
            return []
        self._want_node = False
        self._repick_at = None
        self._waited = True
        return self._next_attempt(now, hedge=self._want_hedge)

    def cancel(self, now: float) -> list[Action]:
        """The application cancelled the call: cancel every attempt in flight and end."""
        if self.finished:
            return []
        return self._end([Finish(None, CANCELLED)])

    # ------------------------------------------------------------ inside

    def _add(
        self, sub: S, done: DoneCallback | None, now: float, *, counted: bool = False
    ) -> Attempt[S]:
        attempt = Attempt(sub, done, len(self.attempts), now, self.left(now))
        self.attempts.append(attempt)
        self._live += 1
        self._avoid_tried = False
        self._retry.started(sub.address)
        if not counted:
            sub.inflight.append(None)
            # An observed done callback counts the attempt as started now (not when it ends).
            started = getattr(done, "started", None)
            if started is not None:
                started()
        return attempt

    def _next_attempt(
        self, now: float, given: Pick[S] | PickError | None = None, *, hedge: bool = False
    ) -> list[Action]:
        """Pick a node for the next attempt and start it, or wait for one, or give up."""
        deadline = self.deadline
        if deadline is not None and now >= deadline and self.attempts:
            # No attempt after the first starts past the deadline: the call ends with the
            # outcome of the last attempt (the hedges in flight end by their own timeout).
            return self._wait() if self._live else self._end([Finish(self._last_ended(), None)])
        actions: list[Action] = []
        while True:
            picked = self._pick(given, untried_only=hedge or self._avoid_tried)
            given = None
            if picked is None:
                return actions + self._unpicked(now, hedge)
            sub, done = picked
            attempt = self._add(sub, done, now)
            actions.append(Start(attempt))
            if self._overflow:  # the requests kept passed a limit while none was in flight
                return actions + self._commit(attempt)
            if not self._hedge_due(now) or not self._may_hedge():
                return actions + self._wait()
            hedge = True  # hedgingDelay 0: every attempt at once

    def _hedge_due(self, now: float) -> bool:
        """After an attempt started at ``now``: when the next hedge is due (``_next_at``);
        True when it is due at once (hedgingDelay 0)."""
        hedging = self._hedging
        if hedging is None or self._no_more or self._retry.attempts >= hedging.attempts:
            return False
        due = now + hedging.hedging_delay
        if self.deadline is not None and due >= self.deadline:
            return False  # a hedge that could only start too late
        if due > now:
            self._next_at = due
            return False
        return True

    def _pick(self, given: Pick[S] | PickError | None, *, untried_only: bool) -> Pick[S] | None:
        """A pick for the next attempt, on an untried node when one comes within a few picks
        (else a tried one, or for a hedge none); None when the picker refused (``_refusal``)."""
        self._refusal = None
        pickers = self._pickers
        picker = pickers()
        info = self._info

        def pick() -> Pick[S] | None:
            nonlocal given, picker
            for _ in range(_RETIRED_REPICKS):
                if given is not None:
                    picked, given = given, None
                else:
                    try:
                        picked = picker.pick(info)
                    except PickError as exc:
                        picked = exc
                if isinstance(picked, PickError):
                    if self._refusal is None:
                        self._refusal = picked
                    return None
                if not picked.subchannel.retired:
                    return picked
                # Picked from a picker older than the node's removal: the new one is out.
                _give_back(picked)
                picker = pickers()
            if self._refusal is None:
                self._refusal = NotReadyError()
            return None

        tried = self._retry.tried
        picked = pick_avoiding(pick, _address, tried, _give_back) if tried else pick()
        if picked is not None and untried_only and picked.subchannel.address in tried:
            _give_back(picked)
            return None
        if picked is not None:
            self._refusal = None
        return picked

    def _unpicked(self, now: float, hedge: bool) -> list[Action]:
        """No node for the next attempt: wait for a picker, or do without that attempt."""
        refused = self._refusal
        if refused is None and hedge:  # a hedge found only tried nodes: again after the delay
            return self._hedge_later(now, again=True)
        if refused is None:
            # A retry after a failed connection found only the nodes tried: the picker may not
            # know yet (a zone's one node under prefer_local). Wait for the next one, a while.
            self._avoid_tried = False
            self._want_node, self._want_hedge = True, False
            self._repick_at = now + _REPICK_WAIT
            if self.deadline is not None and self._repick_at > self.deadline:
                self._repick_at = self.deadline
            return self._wait()
        # A call that made attempts already was under way: a channel closed under it cancels it.
        answer = refusal(refused, self._info, waited=self._waited or bool(self.attempts))
        if answer is None:  # wait for a picker with a node for this call
            if isinstance(refused, NotReadyError):
                self._cause = refused.failure or refused.reason or self._cause
            self._want_node = True
            self._want_hedge = hedge
            return self._wait()
        return self._refuse(answer)

    def _hedge_later(self, now: float, *, again: bool = False) -> list[Action]:
        """No hedge now; with ``again``, try once more after hedgingDelay while attempts are
        in flight. With none in flight, the last attempt's outcome is the call's."""
        hedging = self._hedging
        if again and hedging is not None and self._live and hedging.hedging_delay > 0:
            due = now + hedging.hedging_delay
            if self.deadline is None or due < self.deadline:
                self._next_at = due
        if not self._live:
            return self._end([Finish(self._last_ended(), None)])
        return self._wait()

    def _refuse(self, answer: Refusal) -> list[Action]:
        """The picker said no: the call fails with that, unless attempts are still in flight
        (hedges), whose outcome it then takes."""
        self._no_more = True
        if self._live:
            return self._wait()
        if self._plan.refused is not None and answer.code:
            self._plan.refused(answer.code)
        return self._end([Finish(None, answer)])

    def _deadline_refusal(self) -> Refusal:
        answer = deadline_refusal(self._plan.service, self._info)
        if self._cause is None:
            return answer
        return Refusal(answer.code, f"{answer.details}: {self._cause}")

    def _retry_failed(self, attempt: Attempt[S], status: Status, now: float) -> list[Action]:
        code = status.code
        reached = not never_reached_server(code, status.details, got_response=status.got_response)
        delay = self._retry.next_delay(
            code, reached_server=reached, pushback=status.pushback, time_left=self.left(now)
        )
        if delay is None:
            return self._finish(attempt, status)
        self._avoid_tried = not reached
        if delay <= 0:
            return self._next_attempt(now)
        self._next_at = now + delay
        return self._wait()

    def _hedge_failed(self, attempt: Attempt[S], status: Status, now: float) -> list[Action]:
        hedging = self._hedging
        assert hedging is not None
        code = status.code
        if (
            never_reached_server(code, status.details, got_response=False)
            and self._retry.next_delay(code, reached_server=False) is not None
        ):
            self._avoid_tried = True
            return self._next_attempt(now)  # transparent: in its place, not counted
        deadline = self.deadline
        if code == "DEADLINE_EXCEEDED" and deadline is not None and now >= deadline - _SLACK:
            # The call's deadline, which every attempt has: the others end by it too, each on
            # its own (their servers see the deadline, not a cancel). The last is the call's.
            self._no_more = True
            self._next_at = None
            return self._wait() if self._live else self._finish(attempt, status)
        if code not in hedging.non_fatal_status_codes:
            return self._finish(attempt, status)  # fatal: the call ends, the others go
        throttle = self._plan.throttle
        allowed = throttle.on_failure() if throttle is not None else True
        more = not self._no_more and self._retry.attempts < hedging.attempts
        if status.pushback is not None:
            delay = pushback_delay(status.pushback)
            if delay is None:
                self._no_more = True  # A6: the server says no more hedges
                self._next_at = None
            elif more:
                self._next_at = now + delay  # A6: the next one after the pushback
        elif allowed and more:
            self._next_at = None
            return self._next_attempt(now, hedge=True)  # A6: the next one at once
        if self._live or self._want_node or self._next_at is not None:
            return self._wait()
        return self._finish(attempt, status)

    def _may_hedge(self) -> bool:
        """A6: hedges after the first attempt go out only while the throttle allows."""
        throttle = self._plan.throttle
        return throttle is None or throttle.allows_retry

    def _commit(self, attempt: Attempt[S]) -> list[Action]:
        self._release()
        self.committed = attempt
        self._no_more = True
        self._next_at = self._repick_at = None
        self._want_node = False
        actions: list[Action] = [Commit(attempt)]
        actions.extend(Cancel(a) for a in self.attempts if not a.ended and a is not attempt)
        return actions + self._wait()

    def _finish(self, attempt: Attempt[S], status: Status) -> list[Action]:
        if status.code == "OK":
            self._plan.succeeded()
        return self._end([Finish(attempt, None)])

    def _finish_committed(self, attempt: Attempt[S], status: Status) -> list[Action]:
        """The committed attempt ended. A failure the policy would have retried still takes a
        throttle token (A6, and grpc core: the throttle counts before the commit is looked at)."""
        throttle = self._plan.throttle
        if throttle is not None and status.code != "OK":
            retry, hedging = self._plan.retry, self._hedging
            if retry is not None:
                codes = retry.retryable_status_codes
            else:
                codes = hedging.non_fatal_status_codes if hedging is not None else ()
            if status.code in codes:
                throttle.on_failure()
        return self._finish(attempt, status)

    def _end(self, finish: list[Action]) -> list[Action]:
        self._release()
        self.finished = True
        self._next_at = self._repick_at = None
        self._want_node = False
        actions: list[Action] = [Cancel(a) for a in self.attempts if not a.ended]
        wait = self._wait()
        if self._plan.ended is not None and self.attempts:
            self._plan.ended(self)
        return actions + wait + finish

    def _release(self) -> None:
        """The requests kept for a replay are no longer needed: out of the channel's budget."""
        kept, self._kept = self._kept, 0
        budget = self._plan.budget
        if kept and budget is not None:
            budget.give_back(kept)

    def _last_ended(self) -> Attempt[S] | None:
        for attempt in reversed(self.attempts):
            if attempt.ended:
                return attempt
        return None

    def _wait(self) -> list[Action]:
        """The Wait in force now, if it changed since the last one returned."""
        until = self._next_at
        repick = self._repick_at
        if repick is not None:
            until = repick if until is None else min(until, repick)
        deadline = self.deadline
        if self._want_node and not self._live and deadline is not None:
            until = deadline if until is None else min(until, deadline)
        wait = Wait(until, self._want_node) if (until is not None or self._want_node) else _NO_WAIT
        if wait == self._armed:
            return []
        self._armed = wait
        return [wait]


#: How far apart the flow's clock and grpc's may see one deadline pass (grpc.aio sends it as a
#: wall-clock time that core converts to its own clock).
_SLACK = 0.01

#: How long a retry after a failed connection that finds only the nodes tried waits for a new
#: picker before it goes to a tried one: a failed connection moves its sub-channel's state,
#: which the twins publish within a sweep of the sync monitor (kicked by the waiting call) or
#: at once (asyncio); past this, nothing changed (the node is back, or the only one).
_REPICK_WAIT = 0.25

#: Picks made again when a pick returns a sub-channel just retired (a new picker is out by
#: then, so one more is enough; a few more cover updates racing with the call).
_RETIRED_REPICKS = 4


def _address(pick: Pick[Any]) -> str:
    return str(pick.subchannel.address)


def _give_back(pick: Pick[Any]) -> None:
    """A pick that will carry no attempt: its done callback hears so at once."""
    if pick.done is not None:
        pick.done(THROWN_AWAY)
