"""The sync BalancedChannel: one grpc channel per node, and a policy that picks one per call.

Knowing which sub-channels are READY, measured with 1,000 idle endpoints
(benchmarks/channel_idle_cpu.py): grpc's ``Channel.subscribe()`` starts a thread per channel
that wakes every 0.2 s (about half a core); a thread per channel blocked in cygrpc's
``watch_connectivity_state`` still wakes every 0.2 s to check for signals (about 13%, and
``close()`` waits for the pending watch). So one monitor thread per BalancedChannel reads every
sub-channel's state instead - a C call of about 1 us - every 0.2 s when nothing moves (about
1% of a core), and every few milliseconds right after a change, a new snapshot or a call that
has to wait for a node. (That C call is grpcio's internals: without them, each sub-channel
follows ``subscribe()``.) The same thread serves the calls' timers (a backoff, a hedge, a
subset's recheck) and tells the calls waiting for a node about each new picker: no call has a
thread of its own to wait.

Each call is its :class:`~grpc_etcd._channel._flow.CallFlow`'s: the code here only starts,
cancels and waits, and tells the flow what happened. A blocking unary call's hot path - the
first pick succeeds and the plan is ``inline`` - is a plain blocking call on the caller's
thread, with no flow unless it fails; a hedged one's (:class:`_InlineHedge`) is handed to a
flow if it outlasts hedgingDelay. Every other call - futures, streams, a blocking call past its
hot path - is a :class:`_Drive` of its flow, each attempt a grpc future or stream: grpc's
callback threads, the monitor and the caller feed the flow one event at a time, and the caller
waits for what it needs. A response stream's first message commits the call; a request
stream's messages are serialized once and kept for a replay until it commits.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, cast

import grpc

from .._closing import Closing
from ..config import ServiceConfig
from ..policies.base import Pick, PickError, Policy, done_info
from ..routing import CallInfo
from ._base import DEFAULT_DRAIN_TIMEOUT, ChannelBase, MultiCallableBase
from ._call import CLOSED, Refusal
from ._flow import (
    CANCELLED,
    OK,
    Action,
    Attempt,
    CallFlow,
    CallPlan,
    Cancel,
    Commit,
    Finish,
    Start,
    Status,
    Wait,
)
from ._health import HealthWatch
from ._resilience import status_name as _code_name
from ._resilience import status_of
from ._subchannel import STATE_BY_CODE, STATE_BY_CONNECTIVITY, Subchannel
from ._tracing import name_peer

__all__ = ["BalancedChannel", "FailedCall"]

log = logging.getLogger("grpc_etcd.channel")

# Right after a change, re-check every 1 ms, doubling while nothing moves: a loopback connect
# takes about a millisecond, and the first call on a new channel waits for it.
_POLL_FAST = 0.001
# When nothing moves: the period of grpc's own Channel.subscribe() polling, so losing a
# connection is noticed as fast as with stock grpc.
_POLL_SLOW = 0.2

_Sub = Subchannel[grpc.Channel]
_Flow = CallFlow[_Sub]
_Attempt = Attempt[_Sub]
Metadata = Sequence[tuple[str, str | bytes]]

if TYPE_CHECKING:
    _FutureBase = grpc.Future[Any]
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable[Any, Any]
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable[Any, Any]
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable[Any, Any]
    _StreamStreamBase = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _FutureBase = grpc.Future
    _UnaryUnaryBase = grpc.UnaryUnaryMultiCallable
    _UnaryStreamBase = grpc.UnaryStreamMultiCallable
    _StreamUnaryBase = grpc.StreamUnaryMultiCallable
    _StreamStreamBase = grpc.StreamStreamMultiCallable


class FailedCall(grpc.RpcError, grpc.Call, _FutureBase):
    """A call that could not start (no node, deadline, failing nodes): ``grpc_etcd.FailedCall``.

    Like grpc's own failed calls it is at once the exception, the Call, the Future and the
    response iterator, so interceptors (which call ``.result()``) and stream readers work.
    Catch it as ``grpc.RpcError`` and read ``code()`` and ``details()``.
    """

    # What users see in a traceback: the public name, not this private module.
    __module__ = "grpc_etcd"

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__()
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def debug_error_string(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpc's own: None
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> NoReturn:
        raise self

    def exception(self, timeout: float | None = None) -> FailedCall:
        return self

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        try:
            raise self
        except FailedCall:
            return sys.exc_info()[2]

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> NoReturn:
        raise self

    def __str__(self) -> str:
        return (
            f"<{type(self).__name__} of RPC that terminated with:\n"
            f'\tstatus = {self._code}\n\tdetails = "{self._details}"\n>'
        )

    __repr__ = __str__


def _failed(refused: Refusal) -> BaseException:
    """The sync twin's failed call for a refusal (grpc's own ValueError on a closed channel)."""
    if refused is CLOSED:
        return ValueError("Cannot invoke RPC on closed channel!")
    return FailedCall(grpc.StatusCode[refused.code], refused.details)


def _code(exc: BaseException) -> str:
    """The status an attempt that raised ``exc`` as it started reports (its own, if any)."""
    return _code_name(exc) if isinstance(exc, grpc.RpcError) else "UNKNOWN"


def _nothing(connectivity: grpc.ChannelConnectivity) -> None:
    """A subscriber whose subscription only asks a channel to connect."""


def _core(channel: grpc.Channel) -> Any:
    """The cygrpc channel under ``channel`` (grpcio's internals): grpc.Channel has no public
    non-blocking state query, its cygrpc channel has one. Interceptors wrap the channel
    (grpc's own ``intercept_channel``, OpenTelemetry's instrumentor around
    ``grpc.insecure_channel``), each keeping the one it wraps as ``_channel``: unwrap them.
    None when there is none to be found: the channel then follows grpc's ``subscribe()``."""
    core: Any = channel
    while not hasattr(core, "check_connectivity_state"):
        core = getattr(core, "_channel", None)
        if core is None:
            return None
    return core


class BalancedChannel(ChannelBase[grpc.Channel], Closing, grpc.Channel):
    """A ``grpc.Channel`` over every node of one service; each call goes to the node its policy
    picks (by default ``random``, alias ``version``: a random READY node of the version the call
    asks for).

    The owner feeds it the service's node sets with :meth:`update` (the registry's watcher does
    this). Calls made before the first snapshot wait for it; within their deadline, calls wait
    for a matching node to become READY. A node's version is asked for with ``x-version`` call
    metadata, else ``grpc_etcd.route(version=...)``, else ``version=``; a version that does not
    come from the metadata is added to it, so the server sees it.

    ``config`` is the service config of docs/routing.md (a ``ServiceConfig`` or its JSON as a
    mapping), ``policy`` a shortcut for its ``loadBalancingConfig``, ``source`` the labels of the
    caller that routes' ``match.source`` test; :meth:`configure` lays etcd's document over it.
    ``credentials`` (TLS) and ``options`` apply to every sub-channel. A removed node's calls in
    flight finish (for at most ``drain_timeout`` seconds) before its connection is closed.
    """

    def __init__(
        self,
        service: str,
        *,
        policy: str | Policy | None = None,
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        config: ServiceConfig | Mapping[str, Any] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        # Set (and replaced) whenever a new picker is published: waiting calls sleep on it.
        self._changed = threading.Event()
        super().__init__(
            service,
            policy=policy,
            version=version,
            credentials=credentials,
            options=options,
            drain_timeout=drain_timeout,
            config=config,
            source=source,
        )
        self._retired: list[_Sub] = []
        self._dirty = False  # an ejection changed: the monitor publishes a new picker
        self._subscribers: list[list[Any]] = []
        # Calls waiting for a time (a backoff, a hedge) or for a new picker; the monitor thread
        # serves them, so no call needs a thread of its own to wait.
        self._timers: list[list[Any]] = []  # [when, number, callback or None], a heap
        self._incoming: list[list[Any]] = []  # timers set since the monitor last looked
        self._timer_ids = itertools.count()
        # Hedged calls whose first attempt runs inline, each due at its ``due`` (a set: a call
        # joins and leaves it with no lock, and the monitor hands those due to a flow).
        self._hedges: set[_InlineHedge] = set()
        self._awaiting: set[Callable[[], None]] = set()
        self._woken = False  # a picker came since the monitor last served _awaiting
        self._next_wake = 0.0  # when the monitor wakes at the latest (time.monotonic)
        self._kick = threading.Event()
        self._monitor = threading.Thread(
            target=self._run, name=f"grpc-etcd-channel {service}", daemon=True
        )
        self._monitor.start()

    def add_close_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once when the channel closes (at once if it is closed already).

        The registry uses it to stop the watcher that feeds :meth:`update`.
        """
        with self._lock:
            if not self._closed:
                self._close_callbacks.append(callback)
                return
        callback()

    # ------------------------------------------------------------ grpc.Channel

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Call ``callback`` with the channel's connectivity now and whenever it changes.

        READY when any node is READY. Sub-channels always try to connect, so
        ``try_to_connect`` changes nothing. Callbacks run on the channel's monitor thread.
        """
        with self._lock:
            self._subscribers.append([callback, None])
        self._kick.set()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        """Stop calling ``callback``."""
        with self._lock:
            for index, (subscribed, _) in enumerate(self._subscribers):
                if subscribed == callback:
                    del self._subscribers[index]
                    break

    def close(self) -> None:
        """Close every sub-channel (cancelling calls in flight, like grpc) and stop monitoring."""
        subs = self._begin_close()
        if subs is None:
            return
        with self._lock:
            subs.extend(self._retired)
            self._retired.clear()
            callbacks, self._close_callbacks = self._close_callbacks, []
        self._kick.set()
        if threading.current_thread() is not self._monitor:
            self._monitor.join()
        self._serve_waiting(everything=True)  # calls in a backoff or waiting for a node end
        for sub in subs:
            sub.channel.close()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("close callback of the channel of %s failed", self._service)

    # ------------------------------------------------------------ what waiting calls need

    def _call_at(self, when: float, callback: Callable[[], None]) -> list[Any]:
        """Call ``callback()`` on the monitor thread at ``when`` (time.monotonic); at once
        (here) if the channel is closed. Any thread. Returns the timer: setting its last item
        to None cancels it (the monitor then does not even wake for it)."""
        timer: list[Any] = [when, next(self._timer_ids), callback]
        if self._closed:
            callback()
        else:
            self._incoming.append(timer)  # (atomic: no lock on a call's path)
            if when < self._next_wake:
                self._kick.set()
        return timer

    def _take_incoming(self) -> None:
        """Move the timers set since into the heap (under the lock); one cancelled meanwhile
        (a hedged call that answered within hedgingDelay) never enters it."""
        incoming, timers = self._incoming, self._timers
        while incoming:
            timer = incoming.pop()
            if timer[2] is not None:
                heapq.heappush(timers, timer)

    def _await_picker(self, callback: Callable[[], None], awaiting: bool) -> None:
        """Call ``callback()`` on the monitor thread after each new picker while ``awaiting``;
        at once (here) if the channel is closed. Any thread."""
        with self._lock:
            closed = self._closed
            if not closed:
                if awaiting:
                    self._awaiting.add(callback)
                else:
                    self._awaiting.discard(callback)
        if closed and awaiting:
            callback()
        elif awaiting:
            self._kick.set()  # a call is waiting: have the monitor look closely

    def _serve_waiting(self, everything: bool = False) -> None:
        """Call the timers and inline hedges that are due (``everything``: all of them) and,
        after a new picker, the calls awaiting one (on the monitor thread, or in close())."""
        now = time.monotonic()
        due: list[Callable[[], None]] = []
        with self._lock:
            timers = self._timers
            self._take_incoming()
            while timers and (everything or timers[0][0] <= now):
                callback = heapq.heappop(timers)[2]
                if callback is not None:
                    due.append(callback)
            for hedge in self._hedges.copy():
                if everything or hedge.due <= now:
                    self._hedges.discard(hedge)
                    due.append(hedge.due_now)
            if self._woken or everything:
                self._woken = False
                due.extend(self._awaiting)
                if everything:
                    self._awaiting.clear()
        for callback in due:
            try:
                callback()
            except Exception:
                log.exception("a waiting call of the channel of %s failed", self._service)

    # ------------------------------------------------------------ the base's hooks

    def _open(self, address: str) -> _Sub:
        if self._credentials is None:
            channel = grpc.insecure_channel(address, options=self._options)
        else:
            channel = grpc.secure_channel(address, self._credentials, options=self._options)
        name_peer(channel, address)
        sub = Subchannel(address, channel)
        core = sub.core = _core(channel)
        if core is None:  # grpc's own thread per channel tells each change (see the top)
            channel.subscribe(functools.partial(self._moved, sub), try_to_connect=True)
        else:
            sub.code = core.check_connectivity_state(True)
            sub.state = STATE_BY_CODE[sub.code]
        return sub

    def _moved(self, sub: _Sub, connectivity: grpc.ChannelConnectivity) -> None:
        """A sub-channel without a cygrpc channel to poll changed state (grpc's thread)."""
        sub.state = STATE_BY_CONNECTIVITY[connectivity]
        if connectivity is grpc.ChannelConnectivity.IDLE:  # connect again, as _sweep's poll does
            sub.channel.subscribe(_nothing, try_to_connect=True)
            sub.channel.unsubscribe(_nothing)
        self._republish_soon()

    def _retire(self, subs: list[_Sub]) -> None:
        deadline = time.monotonic() + self._drain_timeout
        for sub in subs:
            sub.drain_deadline = deadline
        self._retired.extend(subs)

    def _after_update(self, opened: list[_Sub]) -> None:
        self._kick.set()

    def _republish_soon(self) -> None:
        self._dirty = True
        self._kick.set()

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        if not self._closed:  # (a closed channel's _call_at would call it here, under the lock)
            self._call_at(time.monotonic() + delay, callback)

    def _wake(self) -> None:
        changed, self._changed = self._changed, threading.Event()
        changed.set()
        if self._awaiting:
            self._woken = True
            self._kick.set()

    def _watch_health(self, sub: _Sub, service_name: str) -> HealthWatch:
        return HealthWatch(sub.channel, service_name, self._republish, name=sub.address)

    def _after_configure(self) -> None:
        self._kick.set()  # the monitor runs the outlier detector's interval

    # ------------------------------------------------------------ monitoring and draining

    def _sweep(self) -> bool:
        """Read every sub-channel's state (and nudge IDLE ones to connect); True if any moved."""
        with self._lock:
            subs = tuple(self._subs.values())
        moved = False
        for sub in subs:
            if sub.core is None:
                continue  # it tells its changes itself (_moved)
            try:
                # try_to_connect: a channel whose server went away sits IDLE until asked.
                code = sub.core.check_connectivity_state(True)
            except ValueError:  # closed under us by close()
                return False
            if code != sub.code:
                sub.code = code
                sub.state = STATE_BY_CODE[code]
                moved = True
        return moved

    def _drain(self) -> None:
        """Close retired sub-channels whose calls have ended or whose grace has run out."""
        if not self._retired:
            return
        now = time.monotonic()
        with self._lock:
            finished = [s for s in self._retired if not s.inflight or now >= s.drain_deadline]
            if not finished:
                return
            self._retired = [s for s in self._retired if s not in finished]
        for sub in finished:
            sub.channel.close()

    def _deliver(self) -> None:
        state = self._connectivity
        with self._lock:
            due = [entry for entry in self._subscribers if entry[1] is not state]
            for entry in due:
                entry[1] = state
        for callback, _ in due:
            try:
                callback(state)
            except Exception:
                log.exception("connectivity callback of the channel of %s failed", self._service)

    def _run(self) -> None:
        interval = _POLL_FAST
        while True:
            timeout = None if not (self._subs or self._retired) else interval
            with self._lock:
                # A timer set from here on kicks (see _call_at): one set after the take below
                # would otherwise wait for the next poll, up to _POLL_SLOW late.
                self._next_wake = math.inf
                timers = self._timers
                self._take_incoming()
                while timers and timers[0][2] is None:  # cancelled: no need to wake for it
                    heapq.heappop(timers)
                soonest = timers[0][0] if timers else math.inf
                if self._hedges:  # (a copy: calls join and leave it meanwhile)
                    soonest = min(soonest, min(hedge.due for hedge in self._hedges.copy()))
                if soonest < math.inf:
                    due = max(0.0, soonest - time.monotonic())
                    timeout = due if timeout is None else min(timeout, due)
                self._next_wake = math.inf if timeout is None else time.monotonic() + timeout
            kicked = self._kick.wait(timeout)
            self._kick.clear()
            if self._closed:
                return
            try:
                moved = self._sweep()
                if moved or self._dirty or self._resilience.metrics_came():
                    self._dirty = False
                    with self._lock:
                        if self._closed:
                            return
                        self._publish()
                self._serve_waiting()
                self._drain()
                self._deliver()
                self._resilience.tick()
            except Exception:  # never let one bad round stop the monitoring
                log.exception("monitor of the channel of %s failed", self._service)
                moved = False
            interval = _POLL_FAST if moved or kicked else min(interval * 2, _POLL_SLOW)


class _Drive:
    """One call's flow, driven by whichever thread has news for it - grpc's callback threads
    (an attempt ended), the channel's monitor (a timer, a new picker), the caller (a response,
    a cancel) - one event at a time; callers wait on it for what they need."""

    __slots__ = (
        "_busy",
        "_channel",
        "_cond",
        "_events",
        "_picker",
        "_reading",
        "_start",
        "_timer",
        "current",
        "error",
        "finished",
        "flow",
        "on_finish",
        "on_start",
        "requests",
    )

    def __init__(
        self,
        channel: BalancedChannel,
        flow: _Flow,
        start: Callable[[_Attempt], Any],
        requests: _Requests | None = None,
    ) -> None:
        self.flow = flow
        self.requests = requests
        self._channel = channel
        self._start = start
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[Callable[[], list[Action]]] = deque()
        self._busy = False
        self._timer: float | None = None
        self._picker = False
        #: The attempt started last.
        self.current: _Attempt | None = None
        #: How the call ended (None while it goes on).
        self.finished: Finish | None = None
        #: What an attempt's start raised: the call ends with it.
        self.error: BaseException | None = None
        self.on_finish: Callable[[], None] | None = None
        self.on_start: Callable[[_Attempt], None] | None = None
        # The attempts whose first message a thread is reading, each with the end grpc
        # reported meanwhile: it reaches the flow after what the reader read (see reading()).
        self._reading: dict[_Attempt, Status | None] | None = None

    def run(self, actions: list[Action]) -> None:
        """Do the call's first actions (the caller's, from _begin)."""
        self.post(lambda: actions)

    def post(self, event: Callable[[], list[Action]]) -> None:
        """Feed ``event`` (a flow method's call) to the flow and do what it answers, here, unless
        another thread is at it: then that thread does it next."""
        with self._cond:
            self._events.append(event)
            if self._busy:
                return
            self._busy = True
        while True:
            try:
                self._do(event())
            except Exception:  # a bug, not a call's outcome: never leave the call stuck
                log.exception("a call of %s failed to go on", self._channel.service)
            with self._cond:
                self._events.popleft()
                if not self._events:
                    self._busy = False
                    self._cond.notify_all()
                    return
                event = self._events[0]

    def wait(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait (on the caller's thread) until ``ready()``; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(ready, timeout)

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Start:
                self._launch(cast(Start, action).attempt)
            elif kind is Cancel:
                call = cast(Cancel, action).attempt.call
                if call is not None:
                    call.cancel()
            elif kind is Commit:
                if self.requests is not None:
                    self.requests.commit(cast(Commit, action).attempt)
            elif kind is Wait:
                self._arm(cast(Wait, action))
            else:
                if self.requests is not None:
                    self.requests.release()
                with self._cond:
                    self.finished = cast(Finish, action)
                    self._cond.notify_all()
                if self.on_finish is not None:
                    self.on_finish()

    def _launch(self, attempt: _Attempt) -> None:
        try:
            call = self._start(attempt)
        except BaseException as exc:  # it could not start: the call ends with this exception
            self.error = exc
            now = time.monotonic()
            self._do(self.flow.cancel(now))
            self._do(self.flow.on_status(attempt, Status(_code(exc)), now))
            return
        attempt.call = call
        self.current = attempt
        call.add_done_callback(functools.partial(self._ended, attempt))
        if self.on_start is not None:
            self.on_start(attempt)

    def _ended(self, attempt: _Attempt, call: Any) -> None:
        """An attempt's grpc call ended (on grpc's callback thread)."""
        status = status_of(call, got_response=_got_headers(call))
        with self._cond:
            reading = self._reading
            if reading is not None and attempt in reading:
                reading[attempt] = status
                return
        self._report(attempt, status)

    def _report(self, attempt: _Attempt, status: Status) -> None:
        flow = self.flow
        self.post(lambda: flow.on_status(attempt, status, time.monotonic()))

    @contextlib.contextmanager
    def reading(self, attempt: _Attempt) -> Iterator[None]:
        """While a thread reads ``attempt``'s first message and tells the flow (respond): an
        end grpc reports meanwhile reaches the flow after it. grpc reports a stream's end on
        its own thread, and may do so between the message reaching the reader and the reader
        telling the flow: the flow would take the call for one that got nothing and retry it
        elsewhere, while the caller holds its response (A6: a response commits the call)."""
        with self._cond:
            if self._reading is None:
                self._reading = {}
            self._reading[attempt] = None
        try:
            yield
        finally:
            with self._cond:
                status = self._reading.pop(attempt)
            if status is not None:
                self._report(attempt, status)

    def respond(self, attempt: _Attempt) -> None:
        """``attempt`` received its first message."""
        flow = self.flow
        self.post(lambda: flow.on_response(attempt, time.monotonic()))

    def cancel(self) -> None:
        """The application cancels the call."""
        flow = self.flow
        self.post(lambda: flow.cancel(time.monotonic()))

    def _arm(self, wait: Wait) -> None:
        if wait.picker is not self._picker:
            self._picker = wait.picker
            self._channel._await_picker(self._on_picker, wait.picker)
        if wait.until is not None and wait.until != self._timer:
            self._channel._call_at(wait.until, self._on_time)
        self._timer = wait.until

    def _on_time(self) -> None:
        if self.finished is None:
            flow = self.flow
            self.post(lambda: flow.on_time(time.monotonic()))

    def _on_picker(self) -> None:
        if self.finished is None:
            flow = self.flow
            self.post(lambda: flow.on_picker(time.monotonic()))


class _Requests:
    """The request messages of one client-streaming or bidi call: read once from the caller's
    iterator, serialized here, and kept for a replay on a later attempt until the call commits.
    The flow counts what is kept (``CallFlow.kept``) and commits the call past gRPC's limits;
    from then on only the attempt committed to reads on."""

    def __init__(self, source: Iterator[Any], serialize: Callable[[Any], bytes] | None) -> None:
        self._source = iter(source)
        self._serialize = serialize
        self._cond = threading.Condition(threading.Lock())
        self._kept: list[bytes] = []
        self._keeping = True
        self._owner: _Attempt | None = None  # the attempt committed to, once it is
        self._reading = False  # an attempt is reading the caller's iterator
        self._ended = False  # the caller's iterator is exhausted (or raised)
        #: Tells the call's flow the size of each message kept.
        self.kept: Callable[[int], None] | None = None

    def attempt(self, attempt: _Attempt) -> Iterator[bytes]:
        """The requests of ``attempt``: those kept, then the caller's next ones."""
        index = 0
        while True:
            with self._cond:
                while True:
                    if index < len(self._kept):
                        data: bytes | None = self._kept[index]
                        break
                    if self._ended or (self._owner is not None and self._owner is not attempt):
                        return  # the end, or the call is another attempt's
                    if not self._reading:
                        self._reading, data = True, None
                        break
                    self._cond.wait()
            index += 1
            if data is None:
                data = self._read()
                if data is None:
                    return
            yield data

    def _read(self) -> bytes | None:
        """The caller's next message, serialized and (while the call may replay) kept; None at
        the end of the caller's iterator."""
        try:
            message = next(self._source)
        except BaseException as exc:  # the end, or the caller's iterator failed (grpc says so)
            with self._cond:
                self._ended, self._reading = True, False
                self._cond.notify_all()
            if isinstance(exc, StopIteration):
                return None
            raise
        data = message if self._serialize is None else self._serialize(message)
        with self._cond:
            self._reading = False
            keeping = self._keeping
            if keeping:
                self._kept.append(data)
            self._cond.notify_all()
        if keeping and self.kept is not None:
            self.kept(len(data))
        return data

    def commit(self, attempt: _Attempt) -> None:
        """The call is ``attempt``'s: keep nothing more (it replays what was kept)."""
        with self._cond:
            if self._keeping:
                self._keeping, self._owner = False, attempt
            self._cond.notify_all()

    def release(self) -> None:
        """The call ended: keep nothing more."""
        with self._cond:
            self._keeping = False
            self._cond.notify_all()


def _method(run: Callable[..., Any], name: str | None, *, streaming: bool) -> Callable[..., Any]:
    """A multicallable's ``__call__``, ``with_call`` or ``future`` (``name``), with grpc's
    signature: it hands ``run`` its name and arguments."""
    if streaming:

        def method(
            self: _MultiCallable,
            request_iterator: Iterator[Any],
            timeout: float | None = None,
            metadata: Metadata | None = None,
            credentials: grpc.CallCredentials | None = None,
            wait_for_ready: bool | None = None,
            compression: grpc.Compression | None = None,
        ) -> Any:
            return run(
                self, name, request_iterator, timeout, metadata, credentials, wait_for_ready,
                compression,
            )  # fmt: skip

    else:

        def method(  # type: ignore[misc]  # the same, but for its first argument's name
            self: _MultiCallable,
            request: Any,
            timeout: float | None = None,
            metadata: Metadata | None = None,
            credentials: grpc.CallCredentials | None = None,
            wait_for_ready: bool | None = None,
            compression: grpc.Compression | None = None,
        ) -> Any:
            return run(
                self, name, request, timeout, metadata, credentials, wait_for_ready, compression
            )

    method.__name__ = method.__qualname__ = name or "__call__"
    return method


class _Sent(NamedTuple):
    """What every attempt of one call sends: its request (or the caller's request iterator),
    metadata, call credentials and compression."""

    request: Any
    metadata: Any
    credentials: grpc.CallCredentials | None
    compression: grpc.Compression | None


class _MultiCallable(MultiCallableBase[grpc.Channel]):
    """The sync twin's calls: each one's flow, driven by a _Drive (begun on the caller's
    thread), but for a blocking unary call's hot path."""

    def __init__(self, channel: BalancedChannel, *args: Any) -> None:
        super().__init__(channel, *args)
        self._channel = channel

    def _plan(self) -> CallPlan:
        resilience = self._channel._resilience
        return resilience.plans.get(self._method) or resilience.plan(self._method)

    def _starter(
        self, name: str | None, sent: _Sent, requests: _Requests | None = None
    ) -> Callable[[_Attempt], Any]:
        """How each attempt of a call starts: on its node's own multicallable (its ``name``
        method if given), with the call's request (``requests``: the ones kept for a replay).

        ``wait_for_ready`` is the flow's business (the call waits for a usable node); on the
        node's own connection it would make a call picked onto a connection that just died wait
        for it until the deadline instead of failing over, so it is not passed on
        (:func:`~grpc_etcd._channel._base.sub_wait_for_ready`).
        """
        request, metadata, credentials, compression = sent
        key = self._key
        no_wait = self._channel._sub_wait_for_ready

        def start(attempt: _Attempt) -> Any:
            sub = attempt.subchannel
            callable_ = sub.callables.get(key) or self._bind(sub)
            if name is not None:
                callable_ = getattr(callable_, name)
            sending = request if requests is None else requests.attempt(attempt)
            return callable_(sending, attempt.timeout, metadata, credentials, no_wait, compression)

        return start

    def _begin(self, flow: _Flow, pick: Pick[_Sub] | PickError | None = None) -> list[Action]:
        """Start ``flow`` on the caller's thread: until its first attempt starts or it ends,
        waiting here while no node is ready (as before grpc's own call returns)."""
        channel = self._channel
        changed = channel._changed  # read before the pick: no new picker goes unnoticed
        actions = flow.start(time.monotonic(), pick)
        wait: Wait | None = None
        while True:
            for action in actions:
                if type(action) is Wait:
                    wait = action
                else:
                    return actions
            assert wait is not None and wait.picker
            channel._kick.set()  # a call is waiting: have the monitor look closely
            timeout = None if wait.until is None else max(0.0, wait.until - time.monotonic())
            fired = changed.wait(timeout)
            changed = channel._changed
            now = time.monotonic()
            actions = flow.on_picker(now) if fired else flow.on_time(now)

    def _drive(
        self,
        flow: _Flow,
        start: Callable[[_Attempt], Any],
        wrap: Callable[[_Drive], Any],
        *,
        pick: Pick[_Sub] | PickError | None = None,
        actions: list[Action] | None = None,
        requests: _Requests | None = None,
    ) -> Any:
        """Drive ``flow``, its attempts started by ``start``: the call object ``wrap`` makes of
        its drive, or the FailedCall of a call that ended at its first pick. ``actions``: the
        flow's answer so far, when it began elsewhere (else it begins here, with ``pick``)."""
        drive = _Drive(self._channel, flow, start, requests)
        if requests is not None:
            requests.kept = lambda size: drive.post(lambda: flow.kept(size, time.monotonic()))
        if actions is None:
            actions = self._begin(flow, pick)
            refused = _refused(actions)
            if refused is not None:
                return refused
        call = wrap(drive)
        drive.run(actions)
        if drive.error is not None:
            raise drive.error
        return call

    def _call(
        self,
        attempts: str | None,
        wrap: Callable[[_Drive], Any],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """A call through its own flow, each attempt its node's ``attempts`` method."""
        started = time.monotonic()
        info, metadata = self._resolve(metadata, wait_for_ready)
        flow: _Flow = CallFlow(
            self._channel._pickers, info, self._plan(), now=started, timeout=timeout
        )
        requests = _Requests(request, self._serializer) if self._raw_requests else None
        sent = _Sent(request, metadata, credentials, compression)
        return self._drive(flow, self._starter(attempts, sent, requests), wrap, requests=requests)

    def _future(self, name: str | None, *args: Any) -> Any:
        """A call whose one response comes as a future: ``future()``, or (the request-stream
        calls) ``__call__`` and ``with_call``, which wait for it."""
        future = self._call("future", _FlowFuture, *args)
        return future if name == "future" else _blocking(future, name)

    def _stream(self, name: str | None, *args: Any) -> Any:
        """A call whose responses come as a stream."""
        return self._call(None, _FlowStream, *args)


def _blocking(future: Any, name: str | None) -> Any:
    """What a blocking call (``__call__``, or ``with_call``: ``name``) returns of its future."""
    result = future.result()
    return result if name is None else (result, future._outcome(None))


def _got_headers(call: Any) -> bool:
    """Whether an ended call's response headers came, without waiting: grpc's public
    ``initial_metadata()`` waits for them, and for a stream whose status came first it would
    wait on grpc's own callback thread for an event that only thread delivers. So the
    rendezvous' state is read (private; if it moves, answers False: no response)."""
    state = getattr(call, "_state", None)
    return bool(getattr(state, "initial_metadata", None))


def _refused(actions: list[Action]) -> FailedCall | None:
    """The failed call to hand back when the call ended at its first pick (None: it began);
    a call on a closed channel raises grpc's ValueError."""
    last = actions[-1] if actions else None
    if not isinstance(last, Finish) or last.attempt is not None:
        return None
    refused = last.refusal
    assert refused is not None
    failed = _failed(refused)
    if isinstance(failed, FailedCall):
        return failed
    raise failed


def _blocking_unary(name: str | None) -> Callable[..., Any]:
    """A unary-unary multicallable's ``__call__`` (``name`` None) or ``with_call``: a blocking
    unary call, with grpc's signature (one frame: no wrapper as :func:`_method` makes). The hot
    path - the first pick succeeds, nothing to apply before the attempt ends - is inlined; a
    hedged one is an :class:`_InlineHedge`; every other case, and a failure, is the flow's."""

    def call(
        self: _UnaryUnary,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        started = time.monotonic()
        info, metadata = self._resolve(metadata, wait_for_ready)
        channel = self._channel
        resilience = channel._resilience
        plan = resilience.plans.get(self._method) or resilience.plan(self._method)
        pick: Pick[_Sub] | PickError
        try:
            pick = channel._picker.pick(info)
        except PickError as exc:
            pick = exc  # the flow decides, outside this except: nothing chained to it
        else:
            sub, done = pick
            if plan.inline and plan.hedging is not None and not sub.retired:
                # (the capture kept on the node: False where grpcio's internals do not allow it)
                captured = sub.callables.get(self._capture_key) or self._capturing(sub, None)
                if captured:
                    hedge = _InlineHedge(self, info, plan, pick, started, timeout)
                    return hedge.run(captured, name, request, metadata, credentials, compression)
            elif plan.inline and not sub.retired:
                sub.inflight.append(None)
                try:
                    callable_ = sub.callables.get(self._key) or self._bind(sub)
                    if name is not None:
                        callable_ = getattr(callable_, name)
                    no_wait = channel._sub_wait_for_ready  # wait_for_ready stays with the pick
                    result = callable_(
                        request, timeout, metadata, credentials, no_wait, compression
                    )
                except grpc.RpcError as exc:
                    error = exc
                except BaseException as exc:  # it could not start: the call ends with it
                    sub.inflight.pop()
                    if done is not None:
                        done(done_info(_code(exc), time.monotonic() - started))
                    raise
                else:
                    sub.inflight.pop()
                    if done is not None:
                        done(done_info("OK", time.monotonic() - started))
                    throttle = plan.throttle
                    if throttle is not None:  # CallPlan.succeeded(), inlined: the flow's rule
                        throttle.on_success()
                    return result
                flow = self._flow(info, plan, started, timeout)
                sent = _Sent(request, metadata, credentials, compression)
                return self._take_over(flow, pick, started, error, name, sent)
        flow = self._flow(info, plan, started, timeout)
        sent = _Sent(request, metadata, credentials, compression)
        return self._by_futures(flow, name, sent, pick=pick)

    call.__name__ = call.__qualname__ = name or "__call__"
    return call


class _UnaryUnary(_MultiCallable, _UnaryUnaryBase):
    def __init__(self, channel: BalancedChannel, *args: Any) -> None:
        super().__init__(channel, *args)
        # Where each sub-channel keeps this method's cancellable blocking multicallable.
        self._capture_key = (self._key, _Capture)

    __call__ = _blocking_unary(None)
    with_call = _blocking_unary("with_call")
    future = _method(_MultiCallable._future, "future", streaming=False)

    def _flow(self, info: CallInfo, plan: CallPlan, started: float, timeout: float | None) -> _Flow:
        return CallFlow(self._channel._pickers, info, plan, now=started, timeout=timeout)

    def _by_futures(
        self,
        flow: _Flow,
        name: str | None,
        sent: _Sent,
        *,
        pick: Pick[_Sub] | PickError | None = None,
        actions: list[Action] | None = None,
    ) -> Any:
        """A blocking unary call past its hot path (waiting for a node, retried, hedged): the
        flow's attempts run as grpc futures, and the caller waits for the call's outcome."""
        future = self._drive(
            flow, self._starter("future", sent), _FlowFuture, pick=pick, actions=actions
        )
        return _blocking(future, name)

    def _take_over(
        self,
        flow: _Flow,
        pick: Pick[_Sub],
        started: float,
        error: grpc.RpcError,
        name: str | None,
        sent: _Sent,
    ) -> Any:
        """The hot path's attempt (``pick``, from ``started``) failed with ``error``: the call's
        flow takes it over, and decides (a transparent retry, perhaps)."""
        attempt = flow.adopt(pick, started)
        attempt.call = error  # (grpc's failed call: its outcome, should it end the call)
        actions = flow.on_status(attempt, status_of(error), time.monotonic())
        return self._by_futures(flow, name, sent, actions=actions)

    def _capturing(self, sub: _Sub, name: str | None) -> tuple[Any, _Capture] | None:
        """This method's multicallable on ``sub`` (its ``name`` method if given) whose blocking
        call another thread may cancel, with its capture; None when grpcio's internals do not
        allow it (then the hedged call's attempts run as futures)."""
        key = self._capture_key
        found: tuple[Any, _Capture] | None = sub.callables.get(key) or None
        if key not in sub.callables:
            callable_ = self._new_callable(sub)
            core = getattr(callable_, "_channel", None)
            if core is not None and hasattr(core, "segregated_call"):
                capture = _Capture(core)
                with contextlib.suppress(AttributeError):
                    callable_._channel = capture
                    found = (callable_, capture)
            sub.callables[key] = found or False
        if found is None:
            return None
        callable_, capture = found
        return (callable_ if name is None else getattr(callable_, name)), capture


class _Waiting(threading.local):
    """Per thread: the inline hedge whose blocking call the thread makes next, if any."""

    hedge: _InlineHedge | None = None


class _Capture:
    """A sub-channel's cygrpc channel, as a multicallable of its sees it: a blocking call's own
    grpc call (cygrpc's segregated call) is handed to the hedge its thread set in ``waiting``,
    so that another thread can cancel it. grpcio's private API: without it, hedges run as
    futures."""

    __slots__ = ("_core", "waiting")

    def __init__(self, core: Any) -> None:
        self._core = core
        self.waiting = _Waiting()

    def segregated_call(self, *args: Any) -> Any:
        call = self._core.segregated_call(*args)
        waiting = self.waiting
        hedge = waiting.hedge
        if hedge is not None:
            waiting.hedge = None
            hedge.captured(call)
        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


#: How the flow's Cancel reaches an inline attempt's segregated call (grpc's own code and
#: words: the first item of grpc.StatusCode's value is core's status code).
_CANCELLED_CODE = grpc.StatusCode.CANCELLED.value[0]
_CANCELLED_DETAILS = CANCELLED.details


class _InlineHedge:
    """A hedged blocking unary call whose first attempt runs on the caller's thread as a plain
    blocking call: about as cheap as an unhedged call when it answers within hedgingDelay. If
    it lasts that long, the monitor hands it to a flow (``CallFlow.adopt``), which sends the
    hedge; the first answer wins and the other attempt is cancelled. While it runs it is in
    its channel's ``_hedges``, which the monitor watches as it does its timers (no timer a
    call: a set's add and discard cost a quarter of one).

    No lock on the way: the caller and the monitor each try to take ``_turn`` (``list.pop``
    is atomic); the one that gets it decides whether a flow is in the call. What only a hedge
    needs is a class default, set on the instance when used."""

    #: When hedgingDelay has passed since the call started (time.monotonic).
    due: float

    _name: str | None
    #: What the hedges send: request, metadata, call credentials, compression.
    _sending: tuple[Any, Any, grpc.CallCredentials | None, grpc.Compression | None]
    _call: Any = None  # the attempt's segregated call, once made
    _cancel = False  # cancel it as soon as it is made
    _drive: _Drive | None = None
    _attempt: _Attempt | None = None

    def __init__(
        self,
        mc: _UnaryUnary,
        info: CallInfo,
        plan: CallPlan,
        pick: Pick[_Sub],
        started: float,
        timeout: float | None,
    ) -> None:
        self._mc = mc
        self._info = info
        self._plan = plan
        self._pick = pick
        self._started = started
        self._timeout = timeout
        self._turn = [None]

    def _take_turn(self) -> bool:
        try:
            self._turn.pop()
        except IndexError:
            return False
        return True

    def run(
        self,
        captured: tuple[Any, _Capture],
        name: str | None,
        request: Any,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """The call (``name``: ``with_call``, else ``__call__``): its first attempt here, the
        rest, if any, the flow's."""
        mc, plan = self._mc, self._plan
        channel = mc._channel
        sub = self._pick.subchannel
        callable_, capture = captured
        if name is not None:
            callable_ = getattr(callable_, name)
        self._name = name  # for the hedges, if any
        self._sending = (request, metadata, credentials, compression)
        sub.inflight.append(None)
        assert plan.hedge_delay is not None
        self.due = due = self._started + plan.hedge_delay
        hedges = channel._hedges
        if channel._closed:  # (as _call_at: nobody watches it then)
            self.due_now()
        else:
            hedges.add(self)
            if due < channel._next_wake:
                channel._kick.set()
        capture.waiting.hedge = self  # (its segregated call takes it off)
        result, error = None, None
        try:
            result = callable_(
                request, self._timeout, metadata, credentials, channel._sub_wait_for_ready,
                compression,
            )  # fmt: skip
        except grpc.RpcError as exc:
            capture.waiting.hedge = None  # (it failed before its segregated call, perhaps)
            error = exc
        except BaseException as exc:  # it could not start: the call ends with it
            capture.waiting.hedge = None
            self._failed_start(exc)
            raise
        try:
            self._turn.pop()  # (_take_turn, inlined: the hot path)
        except IndexError:  # the monitor took it first: the call is a flow's
            return self._outcome(result, error)
        hedges.discard(self)  # (the monitor need not wake for it)
        if error is None:
            plan.inline_ended(self._pick, "OK", time.monotonic() - self._started)
            return result
        sent = _Sent(*self._sending)
        return mc._take_over(self._flow(), self._pick, self._started, error, name, sent)

    def _outcome(self, result: Any, error: grpc.RpcError | None) -> Any:
        """The call's outcome, its first attempt having ended (``result``, or ``error``) after
        hedgingDelay: its flow's."""
        drive, first = self._drive, self._attempt
        assert drive is not None and first is not None
        status = OK if error is None else status_of(error)
        flow = drive.flow
        drive.post(lambda: flow.on_status(first, status, time.monotonic()))
        drive.wait(lambda: drive.finished is not None)
        finished = drive.finished
        assert finished is not None
        if finished.attempt is first:
            if error is not None:
                raise error
            return result
        if finished.attempt is None:
            assert finished.refusal is not None
            raise _failed(finished.refusal)
        winner = finished.attempt.call
        return winner.result() if self._name is None else (winner.result(), winner)

    def _flow(self) -> _Flow:
        return self._mc._flow(self._info, self._plan, self._started, self._timeout)

    def due_now(self) -> None:
        """hedgingDelay passed (on the monitor thread): unless the caller has its outcome, a
        flow takes the attempt over and decides the hedge."""
        if not self._turn:
            return
        flow = self._flow()
        attempt = flow.adopt(self._pick, self._started)
        attempt.call = self  # the flow's Cancel reaches cancel()
        mc = self._mc
        drive = _Drive(mc._channel, flow, mc._starter("future", _Sent(*self._sending)))
        self._drive, self._attempt = drive, attempt  # (set before the turn: the caller reads)
        if self._take_turn():
            drive.post(lambda: flow.on_time(time.monotonic()))

    def captured(self, call: Any) -> None:
        """The inline attempt's segregated call was made (the capture hands it here)."""
        self._call = call
        if self._cancel:  # (cancel() may also see the call: a second cancel does nothing)
            call.cancel(_CANCELLED_CODE, _CANCELLED_DETAILS)

    def cancel(self) -> bool:
        """The flow cancels the inline attempt (a hedge won)."""
        self._cancel = True
        call = self._call
        if call is not None:
            call.cancel(_CANCELLED_CODE, _CANCELLED_DETAILS)
        return True

    def _failed_start(self, exc: BaseException) -> None:
        if self._take_turn():
            self._mc._channel._hedges.discard(self)
            self._plan.inline_ended(self._pick, _code(exc), time.monotonic() - self._started)
            return
        drive, attempt = self._drive, self._attempt
        assert drive is not None and attempt is not None
        flow = drive.flow

        def failed() -> list[Action]:
            now = time.monotonic()
            return flow.cancel(now) + flow.on_status(attempt, Status(_code(exc)), now)

        drive.post(failed)


class _FlowFuture(_FutureBase, grpc.Call):
    """A call with one response, as a grpc future: its attempts are the flow's (retried,
    hedged); it completes with the attempt that ended the call."""

    def __init__(self, drive: _Drive) -> None:
        self._drive = drive
        self._callbacks: list[Callable[[Any], None]] = []
        drive.on_finish = self._finished

    def _finished(self) -> None:
        with self._drive._cond:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback of a call of %s failed", self._drive._channel.service)

    def _outcome(self, timeout: float | None) -> Any:
        """The grpc call that ended the call (a FailedCall when no attempt did)."""
        drive = self._drive
        if not drive.wait(lambda: drive.finished is not None, timeout):
            raise grpc.FutureTimeoutError()
        finished = drive.finished
        assert finished is not None
        if drive.error is not None:
            raise drive.error
        if finished.attempt is not None:
            return finished.attempt.call
        if finished.refusal is CANCELLED:
            raise grpc.FutureCancelledError()
        assert finished.refusal is not None
        return _failed(finished.refusal)

    # grpc.Future

    def cancel(self) -> bool:
        drive = self._drive
        if drive.finished is not None:
            return False
        drive.cancel()
        drive.wait(lambda: drive.finished is not None)
        return True

    def cancelled(self) -> bool:
        finished = self._drive.finished
        return finished is not None and finished.refusal is CANCELLED and not self._drive.error

    def running(self) -> bool:
        return self._drive.finished is None

    def done(self) -> bool:
        return self._drive.finished is not None

    def result(self, timeout: float | None = None) -> Any:
        return self._outcome(timeout).result()

    def exception(self, timeout: float | None = None) -> Any:
        return self._outcome(timeout).exception()

    def traceback(self, timeout: float | None = None) -> Any:
        return self._outcome(timeout).traceback()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        drive = self._drive
        with drive._cond:
            if drive.finished is None:
                self._callbacks.append(fn)
                return
        fn(self)

    # grpc.Call (the attempt's that ended the call)

    def initial_metadata(self) -> Any:
        return self._outcome(None).initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._outcome(None).trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._cancelled():
            return grpc.StatusCode.CANCELLED
        return cast(grpc.StatusCode, self._outcome(None).code())

    def details(self) -> str:
        if self._cancelled():
            return CANCELLED.details
        return cast(str, self._outcome(None).details())

    def _cancelled(self) -> bool:
        drive = self._drive
        drive.wait(lambda: drive.finished is not None)
        return self.cancelled()

    def is_active(self) -> bool:
        return self._drive.finished is None

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpc's own: None
        return self._drive.flow.left(time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.add_done_callback(lambda _future: callback())
        return True


#: What a hedged stream's attempt read when it ended before its first message.
_NO_MESSAGE: Any = object()
#: What a read of a stream's first message got when grpc raised its error.
_FAILED: Any = object()


class _FlowStream:
    """A call with a response stream, as grpc's own (iterator, Call, Future). Until its first
    response the flow may retry it, transparently or per the policy, or hedge it; from then on
    it is the committed attempt's grpc call."""

    def __init__(self, drive: _Drive) -> None:
        self._drive = drive
        self._call: Any = None  # the committed attempt's call
        self._hedged = hedged = drive.flow.hedged
        self._firsts: dict[_Attempt, Any] = {}
        if hedged:
            drive.on_start = self._read_first

    def __iter__(self) -> _FlowStream:
        return self

    def __next__(self) -> Any:
        call = self._call
        if call is None:
            return self._first()
        return next(call)

    def _first(self) -> Any:
        """The first response: read by the caller from the one attempt in flight, or (hedged)
        by a thread per attempt; the attempt that gets it wins the call."""
        drive = self._drive
        if self._hedged:
            flow = drive.flow
            drive.wait(lambda: flow.committed is not None or drive.finished is not None)
            winner = flow.committed
            if winner is None:
                return self._failure()
            # (Committed by its first message, or by its requests passing the limits: then
            # its reader is still at it.)
            firsts = self._firsts
            drive.wait(lambda: winner in firsts or winner.ended)
            self._call = winner.call
            message = firsts.pop(winner, _NO_MESSAGE)
            firsts.clear()
            if message is _NO_MESSAGE:
                return next(winner.call)  # ended: its end (or its error) as grpc says it
            return message
        failed: _Attempt | None = None
        while True:

            def moved_on(failed: _Attempt | None = failed) -> bool:
                current = drive.current
                return drive.finished is not None or (current is not None and current is not failed)

            drive.wait(moved_on)
            attempt = drive.current
            if attempt is None or attempt is failed:
                return self._failure()
            call = attempt.call
            with drive.reading(attempt):
                try:
                    message = next(call)
                except StopIteration:
                    message = _NO_MESSAGE
                except grpc.RpcError:
                    message = _FAILED
                else:
                    drive.respond(attempt)
            if message is _FAILED:
                # Its status comes through its done callback: wait for the flow's word on it.
                failed = attempt
                drive.wait(lambda: attempt.ended)  # noqa: B023 (waited for at once)
                continue
            self._call = call
            if message is _NO_MESSAGE:
                raise StopIteration
            return message

    def _read_first(self, attempt: _Attempt) -> None:
        """A hedged attempt started: read its first message on a thread of its own."""

        def read() -> None:
            with self._drive.reading(attempt):
                try:
                    message = next(attempt.call)
                except StopIteration:
                    message = _NO_MESSAGE
                except Exception:  # an RpcError: its status comes through its done callback
                    return
                self._firsts[attempt] = message
                self._drive.respond(attempt)

        threading.Thread(target=read, name="grpc-etcd hedge", daemon=True).start()

    def _failure(self) -> NoReturn:
        """Raise how the call ended without a response."""
        finished = self._drive.finished
        assert finished is not None
        if finished.attempt is not None:
            raise finished.attempt.call  # grpc's failed call is its own error
        last = self._drive.current
        if finished.refusal is CANCELLED and last is not None:
            raise last.call
        assert finished.refusal is not None
        raise _failed(finished.refusal)

    def _latest(self) -> Any:
        if self._call is not None:
            return self._call
        finished = self._drive.finished
        if finished is not None and finished.attempt is not None:
            return finished.attempt.call
        current = self._drive.current
        return current.call if current is not None else None

    def cancel(self) -> bool:
        """Cancel the call (every attempt of it)."""
        if self._call is not None:
            return bool(self._call.cancel())
        if self._drive.finished is not None:
            return False
        self._drive.cancel()
        return True

    def _ended(self) -> Any:
        """The call that ended the call, once it did (a FailedCall when no attempt did)."""
        drive = self._drive
        drive.wait(lambda: drive.finished is not None)
        call = self._latest()
        if call is None:
            finished = drive.finished
            assert finished is not None and finished.refusal is not None
            return FailedCall(grpc.StatusCode[finished.refusal.code], finished.refusal.details)
        return call

    def code(self) -> grpc.StatusCode:
        return cast(grpc.StatusCode, self._ended().code())

    def details(self) -> str:
        return cast(str, self._ended().details())

    def trailing_metadata(self) -> Any:
        return self._ended().trailing_metadata()

    def initial_metadata(self) -> Any:
        drive = self._drive
        flow = drive.flow
        drive.wait(lambda: flow.committed is not None or drive.finished is not None)
        return (self._latest() or self._ended()).initial_metadata()

    def __getattr__(self, name: str) -> Any:
        # The rest of grpc's Call and Future (is_active, time_remaining, add_callback, done,
        # add_done_callback, result, ...): the committed attempt's, or the latest one's.
        call = self._latest()
        if call is None:
            call = self._ended()
        return getattr(call, name)


class _UnaryStream(_MultiCallable, _UnaryStreamBase):
    __call__ = _method(_MultiCallable._stream, None, streaming=False)


class _StreamUnary(_MultiCallable, _StreamUnaryBase):
    _raw_requests = True
    __call__ = _method(_MultiCallable._future, None, streaming=True)
    with_call = _method(_MultiCallable._future, "with_call", streaming=True)
    future = _method(_MultiCallable._future, "future", streaming=True)


class _StreamStream(_MultiCallable, _StreamStreamBase):
    _raw_requests = True
    __call__ = _method(_MultiCallable._stream, None, streaming=True)


BalancedChannel._MULTICALLABLES = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}
