"""The asyncio BalancedChannel: the twin of :class:`grpc_etcd.BalancedChannel`.

One ``grpc.aio`` channel per node, each watched by a task blocked in ``wait_for_state_change``
(grpc's asyncio completion queue wakes it only on a change: no polling). A removed node's
channel closes once its calls have ended (counted, as in the sync twin) or its drain_timeout
has passed.

A call returns one of this module's call objects: grpc.aio's call interface over the attempts
that the call's :class:`~grpc_etcd._channel._flow.CallFlow` decides. The flow decides everything
(wait for a node or fail, which node, retry, hedge, commit, the deadline, the done callbacks);
the call object only does what it answers - starts a grpc.aio call on a sub-channel, cancels
one, arms a timer, waits for the next picker - and tells it what happened, from grpc.aio's done
callbacks (a unary call has no task of its own). When the plan is ``inline`` (no method timeout,
no hedging all at once) and a unary-request call's first pick succeeds, that attempt starts at
once and a flow is made only if it fails, is cancelled or, for a hedged call, outlasts
hedgingDelay (an :class:`_Alarm` per delay tells, not a timer per call); the flow then decides
what follows.

A response stream reads its first message itself: it commits the call (a hedge's first message
wins it). A request stream sends its messages itself, each attempt from the first message,
keeping them (and telling the flow their sizes) until the call commits. Response headers
commit the call (A6) when its status says they came, or when the application's
``initial_metadata()`` sees them: grpc.aio tells a call's headers only to whoever awaits them,
and a unary call has no task of its own to do so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from .._closing import AsyncClosing
from ..config import ServiceConfig
from ..policies.base import Pick, PickError, Policy, done_info
from ..routing import CallInfo
from ..snapshot import Snapshot
from ._base import DEFAULT_DRAIN_TIMEOUT, ChannelBase, MultiCallableBase
from ._call import CLOSED, Refusal
from ._flow import CANCELLED, Attempt, CallFlow, CallPlan, Cancel, Commit, Start, Status, Wait
from ._health import AsyncHealthWatch
from ._resilience import status_of
from ._subchannel import CONNECTIVITY_BY_STATE, STATE_BY_CONNECTIVITY, Subchannel
from ._tracing import name_peer

__all__ = ["BalancedChannel"]

log = logging.getLogger("grpc_etcd.channel")

_Sub = Subchannel[grpc.aio.Channel]

if TYPE_CHECKING:
    _UnaryUnaryCallBase = grpc.aio.UnaryUnaryCall[Any, Any]
    _UnaryStreamCallBase = grpc.aio.UnaryStreamCall[Any, Any]
    _StreamUnaryCallBase = grpc.aio.StreamUnaryCall[Any, Any]
    _StreamStreamCallBase = grpc.aio.StreamStreamCall[Any, Any]
    _UnaryUnaryBase = grpc.aio.UnaryUnaryMultiCallable[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamMultiCallable[Any, Any]
    _StreamUnaryBase = grpc.aio.StreamUnaryMultiCallable[Any, Any]
    _StreamStreamBase = grpc.aio.StreamStreamMultiCallable[Any, Any]
else:
    _UnaryUnaryCallBase = grpc.aio.UnaryUnaryCall
    _UnaryStreamCallBase = grpc.aio.UnaryStreamCall
    _StreamUnaryCallBase = grpc.aio.StreamUnaryCall
    _StreamStreamCallBase = grpc.aio.StreamStreamCall
    _UnaryUnaryBase = grpc.aio.UnaryUnaryMultiCallable
    _UnaryStreamBase = grpc.aio.UnaryStreamMultiCallable
    _StreamUnaryBase = grpc.aio.StreamUnaryMultiCallable
    _StreamStreamBase = grpc.aio.StreamStreamMultiCallable

#: How often a removed node's calls in flight are counted while it drains (the sync monitor
#: counts them every 0.2 s at most).
_DRAIN_POLL = 0.1

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
#: A unary-response grpc.aio call's task for its response (or EOF), which its __await__ awaits.
_RESPONSE_TASK = "_call_response"
# grpc.aio's own texts for misuse of a streaming call.
_API_STYLE_ERROR = "The iterator and read/write APIs may not be mixed on a single RPC."
_RPC_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'


def _rpc_error(refused: Refusal) -> grpc.aio.AioRpcError:
    """The aio twin's failed call for a refusal: grpc.aio's own error type."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode[refused.code],
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=refused.details,
        debug_error_string=refused.details,
    )


#: Seconds between two looks for a MeterProvider set after the channel published its picker
#: (without one its picks go unobserved: no cost per call).
_METRICS_POLL = 1.0

# Tasks nobody awaits, kept referenced until they finish (asyncio holds only weak references).
_background: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    _background.add(future)
    future.add_done_callback(_background.discard)


class _Later(Exception):
    """grpc.aio made us wait for what a finished call knows (not so up to grpcio 1.85)."""


def _now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that returns without waiting: a finished grpc.aio call's
    ``code()``, ``details()``, metadata (grpc keeps them once the call has ended); raises
    :class:`_Later` should it wait."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise _Later


class _Ended:
    """A finished grpc.aio call with the synchronous methods :func:`status_of` reads, each
    read at once (:func:`_now`) unless ``told`` them already (:func:`_awaited`)."""

    __slots__ = ("_call", "_told")

    def __init__(self, call: Any, told: tuple[Any, Any, Any, Any] | None = None) -> None:
        self._call = call
        self._told = told

    def code(self) -> Any:
        return self._told[0] if self._told else _now(self._call.code())

    def details(self) -> Any:
        return self._told[1] if self._told else _now(self._call.details())

    def initial_metadata(self) -> Any:
        return self._told[2] if self._told else _now(self._call.initial_metadata())

    def trailing_metadata(self) -> Any:
        return self._told[3] if self._told else _now(self._call.trailing_metadata())


async def _awaited(call: Any) -> Status:
    """:func:`status_of` a finished grpc.aio call, awaiting what it reads."""
    told = (
        await call.code(),
        await call.details(),
        await call.initial_metadata(),
        await call.trailing_metadata(),
    )
    return status_of(_Ended(call, told))


def _succeeded(call: Any) -> bool:
    """Whether a finished grpc.aio call ended OK (False when it cannot tell at once: then the
    call's flow hears how it ended, :meth:`_Call._ended`)."""
    try:
        return _now(call.code()) is grpc.StatusCode.OK
    except _Later:
        return False


def _size_of(message: Any, serializer: Callable[[Any], bytes] | None) -> int:
    """A request message's size on the wire, as a replay buffer counts it."""
    size = getattr(message, "ByteSize", None)  # protobuf knows it without serializing
    if size is not None:
        return int(size())
    if isinstance(message, (bytes, bytearray, memoryview)):
        return len(message)
    return len(serializer(message)) if serializer is not None else 0


class BalancedChannel(ChannelBase[grpc.aio.Channel], AsyncClosing, grpc.aio.Channel):
    """A ``grpc.aio.Channel`` over the nodes of one service (a subset of them under a
    subsetting policy); each call goes to the node its policy picks (by default ``random``,
    alias ``version``: a random READY node of the version the call asks for).

    The asyncio twin of :class:`grpc_etcd.BalancedChannel`, with the same constructor plus
    ``interceptors`` (grpc.aio client interceptors, installed on every sub-channel: they run
    after the pick and see the ``x-version`` metadata). :meth:`update` must be called from the
    event loop's thread. Calls return grpc.aio call objects; a call that cannot get a node
    raises :class:`grpc.aio.AioRpcError` when awaited.
    """

    _LABEL = "aio.BalancedChannel"

    def __init__(
        self,
        service: str,
        *,
        policy: str | Policy | None = None,
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        interceptors: Sequence[Any] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        config: ServiceConfig | Mapping[str, Any] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> None:
        # Everything runs on the event loop's one thread: the base's lock is a no-op.
        self._lock = contextlib.nullcontext()
        self._changed = asyncio.Event()  # set (and replaced) when a picker is published
        # The calls waiting for the next picker (each is told once, on the loop's next turn);
        # a call leaves as soon as it no longer waits.
        self._waiting: dict[_Call, None] = {}
        # hedgingDelay -> the calls whose hedge may be due after it (see _Alarm).
        self._alarms: dict[float, _Alarm] = {}
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
        self._interceptors = list(interceptors) if interceptors else None
        self._publish_pending = False
        self._draining: dict[asyncio.Task[None], _Sub] = {}  # removed nodes' closes
        self._ticker: asyncio.Task[None] | None = None  # the outlier detector's interval
        self._metrics_timer: asyncio.TimerHandle | None = None  # see _look_for_metrics

    def update(self, snapshot: Snapshot) -> None:
        """Follow a new node set (call from the event loop's thread).

        Returns once no new call can go to a removed node; a removed node's calls in flight
        keep running for at most ``drain_timeout`` seconds before its channel closes.
        """
        asyncio.get_running_loop()  # off the loop: RuntimeError, before anything changes
        super().update(snapshot)

    def add_close_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once when the channel closes (awaited if it returns an awaitable).

        The registry uses it to stop the watcher that feeds :meth:`update`.
        """
        if not self._closed:
            self._close_callbacks.append(callback)
            return
        result = callback()
        if inspect.isawaitable(result):
            _keep(asyncio.ensure_future(result))

    # ------------------------------------------------------------ grpc.aio.Channel

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel; calls in flight get ``grace`` seconds, then are cancelled."""
        subs = self._begin_close()
        if subs is None:
            return
        watchers = [sub.task for sub in subs if sub.task is not None]
        if self._ticker is not None:
            watchers.append(self._ticker)
        if self._metrics_timer is not None:
            self._metrics_timer.cancel()
        for task in watchers:
            task.cancel()
        await asyncio.gather(
            *watchers,
            *(sub.channel.close(grace) for sub in subs),
            self._cut_draining(grace),
            return_exceptions=True,
        )
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("close callback of the channel of %s failed", self._service)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when any node is READY (sub-channels always try to connect)."""
        return self._connectivity

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return once :meth:`get_state` differs from ``last_observed_state``."""
        while True:
            changed = self._changed
            if self._connectivity != last_observed_state:
                return
            await changed.wait()

    async def channel_ready(self) -> None:
        """Return once some node is READY."""
        state = self.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(state)
            state = self.get_state(try_to_connect=True)

    # ------------------------------------------------------------ the base's hooks

    def _open(self, address: str) -> _Sub:
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(
                address, options=self._options, interceptors=self._interceptors
            )
        else:
            channel = grpc.aio.secure_channel(
                address,
                self._credentials,
                options=self._options,
                interceptors=self._interceptors,
            )
        name_peer(channel, address)
        sub = Subchannel(address, channel)
        sub.state = STATE_BY_CONNECTIVITY[channel.get_state(try_to_connect=True)]
        return sub

    def _retire(self, subs: list[_Sub]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_timeout
        for sub in subs:
            sub.task.cancel()
            sub.drain_deadline = deadline
            task = loop.create_task(self._drain(sub))
            self._draining[task] = sub
            task.add_done_callback(lambda done: self._draining.pop(done, None))

    def _after_update(self, opened: list[_Sub]) -> None:
        loop = asyncio.get_running_loop()
        for sub in opened:
            sub.task = loop.create_task(self._watch(sub))
        if self._resilience.outlier_detection:
            self._after_configure()  # a config given to the constructor
        if self._metrics_timer is None and self._resilience.metrics_pending:
            self._metrics_timer = loop.call_later(_METRICS_POLL, self._look_for_metrics)

    def _look_for_metrics(self) -> None:
        """While no MeterProvider is set, look for one every :data:`_METRICS_POLL` seconds;
        once one is, publish an observed picker (the sync twin's monitor looks on its wakes)."""
        self._metrics_timer = None
        if self._closed:
            return
        if self._resilience.metrics_came():
            self._publish_soon()
        elif self._resilience.metrics_pending:
            self._metrics_timer = asyncio.get_running_loop().call_later(
                _METRICS_POLL, self._look_for_metrics
            )

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        waiting = self._waiting
        if waiting:
            # On the loop's next turn: a publish happens in the middle of update() or close().
            self._waiting = {}
            loop = asyncio.get_running_loop()
            for call in waiting:
                loop.call_soon(call._on_picker)

    def _republish_soon(self) -> None:
        self._publish_soon()  # done callbacks and the ticker run on the loop

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    # ------------------------------------------------------------ connectivity and draining

    async def _watch(self, sub: _Sub) -> None:
        """Follow one sub-channel's connectivity; nudge it to reconnect whenever it goes IDLE."""
        channel = sub.channel
        try:
            while True:
                # try_to_connect: a channel whose server went away sits IDLE until asked.
                state = STATE_BY_CONNECTIVITY[channel.get_state(try_to_connect=True)]
                if state is not sub.state:
                    sub.state = state
                    self._publish_soon()
                await channel.wait_for_state_change(CONNECTIVITY_BY_STATE[state])
        except asyncio.CancelledError:
            raise
        except Exception:
            if not (self._closed or sub.retired):
                log.exception("watching %s for %s failed", sub.address, self._service)

    async def _drain(self, sub: _Sub) -> None:
        """Close a removed node's channel once the calls on it have ended (they count
        themselves in ``inflight``, as in the sync twin) or its drain_timeout has passed."""
        loop = asyncio.get_running_loop()
        # Counted, not awaited: a call's end pops the list and tells no one (the hot path's
        # cost); grpc.aio's own close(grace) cannot be cut short without its private calls.
        while sub.inflight and loop.time() < sub.drain_deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(_DRAIN_POLL, sub.drain_deadline - loop.time()))
        await sub.channel.close(None)  # (cancels what is left)

    async def _cut_draining(self, grace: float | None) -> None:
        """Give removed nodes' calls ``grace`` seconds, not the rest of their drain_timeout."""
        draining = dict(self._draining)
        if not draining:
            return
        if grace:
            await asyncio.wait(draining, timeout=grace)
        for task in draining:
            task.cancel()
        await asyncio.gather(*draining, return_exceptions=True)
        await asyncio.gather(*(sub.channel.close(None) for sub in draining.values()))

    def _watch_health(self, sub: _Sub, service_name: str) -> AsyncHealthWatch:
        return AsyncHealthWatch(sub.channel, service_name, self._republish, name=sub.address)

    def _after_configure(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """Run the outlier detector's interval while it is configured."""
        while not self._closed:
            wait = self._resilience.tick()
            if wait is None:
                return
            await asyncio.sleep(wait)

    def _alarm(self, delay: float) -> _Alarm:
        alarm = self._alarms[delay] = _Alarm(asyncio.get_running_loop(), delay)
        return alarm

    def _publish_soon(self) -> None:
        # Many sub-channels change at once (start-up, a network blip): one picker for them all.
        if not self._publish_pending:
            self._publish_pending = True
            asyncio.get_running_loop().call_soon(self._publish_now)

    def _publish_now(self) -> None:
        self._publish_pending = False
        if not self._closed:
            self._publish()


#: How gRPC core fails a call with call credentials on a plaintext channel.
_INSECURE_CREDENTIALS = Refusal(
    "UNAUTHENTICATED",
    "Established channel does not have a sufficient security level to transfer call credential.",
)


class _Alarm:
    """The calls of one hedgingDelay whose first attempt started on the hot path, to wake when
    it has passed (their hedge may be due), in the order they started: one loop timer for them
    all (a timer a call would cost each call about 2 us, and most calls end before it). A call
    that ends first takes itself off (:meth:`drop`), so that none is kept alive for it. The
    calls are a dict's keys, in the order they started: the first is the next due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self._delay = delay
        self._calls: dict[_Call, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, call: _Call) -> None:
        """Wake ``call`` hedgingDelay after its start, unless it is dropped first."""
        self._calls[call] = None
        if self._timer is None:
            self._timer = self._loop.call_at(call._started + self._delay, self._ring)

    def drop(self, call: _Call) -> None:
        self._calls.pop(call, None)

    def _ring(self) -> None:
        self._timer = None
        calls, delay = self._calls, self._delay
        now = self._loop.time()
        due: list[_Call] = []
        for call in calls:  # (oldest first)
            when = call._started + delay
            if when > now:
                self._timer = self._loop.call_at(when, self._ring)
                break
            due.append(call)
        for call in due:
            del calls[call]
            call._hedge_due()


# What a call is doing, as the application sees it.
_OPEN = 0  # attempts may still come (or the first is on its way)
_COMMITTED = 1  # the call is one attempt's, which has not ended yet
_FINISHED = 2  # the call's outcome is known
_NOTHING: Any = object()


class _Call:
    """What the four kinds of call share: grpc.aio's call interface and the drive of the flow.

    ``_call`` is the grpc.aio call the application's reads go to: the hot path's attempt,
    then the committed one, and at the end the one whose outcome is the call's (None while
    the flow has none for it, or when the call ends without one: ``_refusal`` or ``_error``).
    Attributes a call seldom needs are class defaults, set on the instance only when used.
    """

    #: Response streams: an attempt is reported once its first read has told whether a
    #: message came (which commits the call), not by its done callback alone.
    _reads_first = False
    #: Request streams: the call sends the requests itself, kept for a replay until it commits.
    _sends = False

    _state = _OPEN
    _call: Any = None
    _flow: CallFlow[_Sub] | None = None
    #: The hot path's pick, until its attempt ends OK or a flow adopts it.
    _hot: Pick[_Sub] | None = None
    _started = 0.0
    _refusal: Refusal | None = None
    _error: BaseException | None = None
    _waiters: list[asyncio.Future[None]] | None = None
    _callbacks: list[Callable[[Any], None]] | None = None
    #: The flow's actions still to do, while they are being done (events on the way are
    #: queued behind them: the flow answered in that order).
    _queue: list[Any] | None = None
    _timer: asyncio.TimerHandle | None = None
    _until: float | None = None
    _wants_picker = False
    #: Where the hot path's attempt of a hedged call waits for hedgingDelay.
    _alarm: _Alarm | None = None
    #: The grpc.aio calls of the attempts the flow cancelled (they lost to another).
    _cancels: set[Any] | None = None

    _owner: _MultiCallable
    _loop: asyncio.AbstractEventLoop
    _info: CallInfo
    _plan: CallPlan
    #: What every attempt is started with: request (None for a request stream), timeout
    #: (the caller's), metadata, call credentials, compression.
    _args: tuple[Any, float | None, Any, grpc.CallCredentials | None, Any]

    @classmethod
    def _new(
        cls,
        owner: _MultiCallable,
        info: CallInfo,
        plan: CallPlan,
        args: tuple[Any, float | None, Any, grpc.CallCredentials | None, Any],
    ) -> _Call:
        """A call of ``owner``'s method. (No ``__init__``: the unary hot path sets these
        itself, without the frame of one.)"""
        call = cls()
        call._owner = owner
        call._loop = asyncio.get_running_loop()
        call._info = info
        call._plan = plan
        call._args = args
        return call

    # ------------------------------------------------------------ the drive

    def _drive(self, given: Pick[_Sub] | PickError) -> Any:
        """Make the call's flow, with the first pick (or its refusal), and do what it says.
        Raise what grpc.aio raises at once: a usage error on a closed channel, an attempt
        that could not start."""
        now = self._loop.time()
        flow = self._new_flow(now)
        self._run(flow.start(now, given))
        self._raise_at_once()
        return self

    def _new_flow(self, now: float) -> CallFlow[_Sub]:
        """The call's flow, from ``now`` (when the call started)."""
        channel = self._owner._channel
        flow = self._flow = CallFlow(
            channel._pickers, self._info, self._plan, now=now, timeout=self._args[1]
        )
        return flow

    def _hot_failed(self, error: Exception) -> Any:
        """The hot path's attempt could not start."""
        self._report(self._adopt(), self._failed_start(error))
        self._raise_at_once()
        return self

    def _raise_at_once(self) -> None:
        if self._state == _FINISHED and self._call is None:
            if self._refusal is CLOSED:
                raise grpc.aio.UsageError("Channel is closed.")
            if self._error is not None and not isinstance(self._error, grpc.RpcError):
                raise self._error  # grpc.aio raises it at once too

    def _adopt(self) -> Attempt[_Sub]:
        """The flow of a hot-path call, which takes over its attempt (now ended, or cancelled
        by the application)."""
        pick, self._hot = self._hot, None
        assert pick is not None
        self._drop_alarm()  # the flow decides the hedge now
        started = self._started
        flow = self._new_flow(started)
        attempt = flow.adopt(pick, started)
        attempt.call = self._call
        if self._state == _COMMITTED:  # a response stream whose first message came
            self._run(flow.on_response(attempt, self._loop.time()))
        return attempt

    def _hot_ended(self, call: Any = None) -> None:
        """The hot path's attempt ended (grpc.aio's done callback; grpc.aio's core call calls
        it with no argument): an OK takes the flow's decision itself; anything else goes to a
        flow."""
        pick = self._hot
        if pick is None:  # adopted meanwhile (the application cancelled)
            flow = self._flow
            assert flow is not None
            self._ended(flow.attempts[0])
            return
        if call is None:
            call = self._call  # (the hot attempt's, while no flow has it)
        core = getattr(call, "_cython_call", None)  # grpc.aio's core call (not if intercepted)
        if core.is_ok() if core is not None else _succeeded(call):
            self._hot = None
            if self._alarm is not None:  # no hedge after it
                self._alarm.drop(self)
            sub, done = pick  # (CallPlan.inline_ended, inlined: the hot path)
            sub.inflight.pop()
            if done is not None:
                done(done_info("OK", self._loop.time() - self._started))
            throttle = self._plan.throttle
            if throttle is not None:  # CallPlan.succeeded(), inlined
                throttle.on_success()
            self._state = _FINISHED
            if self._waiters is not None:
                self._notify()
            if self._callbacks is not None:
                self._call_back()
            return
        self._ended(self._adopt(), call)

    def _ended(self, attempt: Attempt[_Sub], _call: Any = None) -> None:
        """An attempt's grpc.aio call ended (its done callback): tell the flow how. One that
        grpc.aio cancelled itself (a closing channel, a cancelled task awaiting it) ended
        CANCELLED, as in the sync twin."""
        if attempt.ended:
            return
        try:
            status = status_of(_Ended(attempt.call))
        except _Later:
            _keep(self._loop.create_task(self._ended_later(attempt)))
            return
        self._report(attempt, status)

    async def _ended_later(self, attempt: Attempt[_Sub]) -> None:
        status = await _awaited(attempt.call)
        if not attempt.ended:
            self._report(attempt, status)

    def _report(self, attempt: Attempt[_Sub], status: Status) -> None:
        flow = self._flow
        assert flow is not None
        if self._state == _OPEN and self._call is attempt.call:
            self._call = None  # reads wait for what the flow does next
        self._run(flow.on_status(attempt, status, self._loop.time()))

    def _run(self, actions: list[Any]) -> None:
        """Do what the flow answered, in order."""
        if not actions:
            return
        queue = self._queue
        if queue is not None:  # an event while doing the actions before it: after them
            queue.extend(actions)
            return
        self._queue = queue = list(actions)
        try:
            index = 0
            while index < len(queue):
                action = queue[index]
                index += 1
                kind = type(action)
                if kind is Start:
                    self._start(action.attempt)
                elif kind is Cancel:
                    self._cancel_attempt(action.attempt)
                elif kind is Wait:
                    self._arm(action.until, action.picker)
                elif kind is Commit:
                    self._commit(action.attempt)
                else:
                    self._finish(action.attempt, action.refusal)
        finally:
            self._queue = None

    def _open(self, sub: _Sub, timeout: float | None) -> Any:
        """Start one attempt's grpc.aio call on ``sub``."""
        owner = self._owner
        request, _, metadata, credentials, compression = self._args
        if credentials is not None and owner._channel._credentials is None:
            # grpc.aio refuses call credentials on a plaintext channel as the call starts;
            # gRPC core (and so the sync twin) fails the attempt with this status.
            raise _rpc_error(_INSECURE_CREDENTIALS)
        return (sub.callables.get(owner._key) or owner._bind(sub))(
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=owner._channel._sub_wait_for_ready,  # it stays with the pick
            compression=compression,
        )

    def _failed_start(self, error: Exception) -> Status:
        """An attempt's call could not start: the call's error if it is the last."""
        self._error = error
        if isinstance(error, grpc.aio.AioRpcError):
            return status_of(error)
        return Status("UNKNOWN", str(error))

    def _start(self, attempt: Attempt[_Sub]) -> None:
        try:
            call = self._open(attempt.subchannel, attempt.timeout)
        except Exception as exc:
            self._report(attempt, self._failed_start(exc))
            return
        attempt.call = call
        if self._reads_first:
            self._read_first(attempt, call)
        else:
            call.add_done_callback(functools.partial(self._ended, attempt))
        if self._sends:
            self._send_to(attempt, call)
        if self._waiters is not None:
            self._notify()  # (wait_for_connection() may wait for an attempt to start)

    def _cancel_attempt(self, attempt: Attempt[_Sub]) -> None:
        call = attempt.call
        if call is not None:
            if self._cancels is None:
                self._cancels = set()
            self._cancels.add(call)
            call.cancel()

    def _commit(self, attempt: Attempt[_Sub]) -> None:
        self._state = _COMMITTED
        self._call = attempt.call
        self._notify()

    def _finish(self, attempt: Attempt[_Sub] | None, refusal: Refusal | None) -> None:
        self._state = _FINISHED
        self._arm(None, False)
        if attempt is not None:
            self._call = attempt.call  # None if it failed to start: then _error says why
        else:
            self._call = None
            self._refusal = refusal
        self._notify()
        if self._callbacks is not None:
            self._call_back()

    def _call_back(self) -> None:
        callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback %r of a call failed", callback)

    def _arm(self, until: float | None, picker: bool) -> None:
        """The flow's Wait: a timer at ``until``, a look at the next picker."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        self._until = until
        if until is not None:
            self._timer = self._loop.call_at(until, self._on_timer)
        self._wants_picker = picker
        if picker:
            self._owner._channel._waiting[self] = None
        else:
            self._owner._channel._waiting.pop(self, None)

    def _on_timer(self) -> None:
        self._timer = None
        flow = self._flow
        if flow is None or self._state == _FINISHED:
            return
        # The loop may run a timer a clock tick early: it is the time asked for.
        now = max(self._loop.time(), self._until or 0.0)
        self._run(flow.on_time(now))

    def _drop_alarm(self) -> None:
        """The hot path's attempt needs no word of hedgingDelay any more (if it waited)."""
        if self._alarm is not None:
            self._alarm.drop(self)

    def _hedge_due(self) -> None:
        """Called by an :class:`_Alarm` once hedgingDelay has passed since the hot path's
        attempt started: the flow takes it over and decides the hedge."""
        if self._hot is not None and self._state == _OPEN:
            self._adopt()
            self._on_timer()

    def _on_picker(self) -> None:
        flow = self._flow
        if flow is None or not self._wants_picker or self._state == _FINISHED:
            return
        self._run(flow.on_picker(self._loop.time()))
        if self._wants_picker:  # the Wait stands: the picker after this one too
            self._owner._channel._waiting[self] = None

    def _notify(self) -> None:
        """Wake whatever waits for the call to change (commit, end, a request sent)."""
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self, *, cancels: bool) -> None:
        """Wait for the call to change. ``cancels``: a cancelled wait cancels the call, as a
        cancelled await, read or write of a grpc.aio call does."""
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if cancels:
                self.cancel()
            raise

    async def _finished(self) -> None:
        while self._state != _FINISHED:
            await self._changed(cancels=False)

    def _lost(self, call: Any) -> bool:
        """Whether the flow cancelled the attempt of ``call`` (another one won)."""
        return call in (self._cancels or ())

    def _failure(self) -> BaseException:
        """What a call that ended without a grpc.aio call raises."""
        refused = self._refusal
        if refused is CANCELLED:
            return asyncio.CancelledError()
        if refused is not None:
            return _rpc_error(refused)
        return self._error or asyncio.InvalidStateError("the call has no outcome")

    # ------------------------------------------------------------ grpc.aio.RpcContext

    def cancelled(self) -> bool:
        if self._state != _FINISHED:
            return False
        if self._refusal is not None:
            return self._refusal is CANCELLED
        call = self._call
        return call is not None and bool(call.cancelled())

    def done(self) -> bool:
        return self._state == _FINISHED

    def time_remaining(self) -> float | None:
        flow = self._flow
        if flow is not None:
            return flow.left(self._loop.time())
        call = self._call
        return cast("float | None", call.time_remaining()) if call is not None else None

    def cancel(self) -> bool:
        if self._state == _FINISHED:
            return False
        if self._flow is None:
            self._adopt()
        flow = self._flow
        assert flow is not None
        self._run(flow.cancel(self._loop.time()))
        return True

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._state == _FINISHED:
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    # ------------------------------------------------------------ grpc.aio.Call

    async def initial_metadata(self) -> grpc.aio.Metadata:
        while True:
            call = self._call
            if self._state != _OPEN:
                if call is None:
                    return grpc.aio.Metadata()
                return cast("grpc.aio.Metadata", await call.initial_metadata())
            flow = self._flow
            attempt = None
            if flow is not None:  # the latest attempt in flight, if any
                attempt = next((a for a in reversed(flow.attempts) if not a.ended), None)
                call = attempt.call if attempt is not None else None
            if call is None or call.done():  # the flow decides what comes next
                await self._changed(cancels=False)
                continue
            metadata = await call.initial_metadata()
            if self._state != _OPEN or call.done():
                continue  # the call went on without it (or it ended without headers)
            # Its headers came: they commit the call to it (A6).
            if self._alarm is not None and self._flow is None:
                attempt = self._adopt()  # a hedge may follow a hot path's attempt: no more
            if attempt is not None and self._flow is not None:
                self._run(self._flow.on_response(attempt, self._loop.time()))
            return cast("grpc.aio.Metadata", metadata)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._finished()
        call = self._call
        if call is None:
            return grpc.aio.Metadata()
        return cast("grpc.aio.Metadata", await call.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        await self._finished()
        call = self._call
        if call is not None:
            return cast(grpc.StatusCode, await call.code())
        if self._refusal is not None:
            return grpc.StatusCode[self._refusal.code]
        return grpc.StatusCode.UNKNOWN

    async def details(self) -> str:
        await self._finished()
        call = self._call
        if call is not None:
            return cast(str, await call.details())
        if self._refusal is not None:
            return self._refusal.details
        return str(self._error)

    async def debug_error_string(self) -> str:
        await self._finished()
        call = self._call
        if call is not None:
            return cast(str, await call.debug_error_string())
        if self._refusal is not None:
            return self._refusal.details
        return repr(self._error)

    async def wait_for_connection(self) -> None:
        failed: list[Any] = []  # attempts that failed, whose end the flow may not have heard
        while True:
            call = self._call
            if self._state == _FINISHED:
                if call is None:
                    raise self._failure()
                await call.wait_for_connection()  # (raises the call's error if it failed)
                return
            if call is None and self._flow is not None:
                # No attempt is the call's yet: one of them connected is enough (a request
                # stream may need it before its server can answer).
                live = [a.call for a in self._flow.attempts if a.call is not None and not a.ended]
                call = live[-1] if live else None
            if call is None or call in failed:
                await self._changed(cancels=False)
                continue
            try:
                await call.wait_for_connection()
            except grpc.aio.AioRpcError:
                failed.append(call)
            except asyncio.CancelledError:
                if not self._lost(call):
                    raise
            else:
                return

    def __repr__(self) -> str:
        if self._call is not None:
            return repr(self._call)
        if self._state == _FINISHED:
            return f"<{type(self).__name__} failed: {self._failure()!r}>"
        return f"<{type(self).__name__} waiting for a node>"

    # ------------------------------------------------------------ for the kinds

    def _read_first(self, attempt: Attempt[_Sub] | None, call: Any) -> None:
        raise NotImplementedError

    def _send_to(self, attempt: Attempt[_Sub], call: Any) -> None:
        raise NotImplementedError


class _UnaryResponse(_Call):
    """Awaited for its one response."""

    def __await__(self) -> Generator[Any, None, Any]:
        call = self._call
        if call is not None and self._state != _FINISHED:
            # The hot path: straight to the attempt. Its done callback, which runs before
            # grpc.aio wakes this, has told the flow (if any) how it ended. Through grpc.aio's
            # task for the response when there is one (not if intercepted): its __await__ is
            # a generator more a call; an EOF (no response) goes to it, for the error it raises.
            try:
                response = getattr(call, _RESPONSE_TASK, None)
                if response is not None:
                    response = yield from response
                if response is None or response is _EOF:
                    response = yield from call.__await__()
                return response
            except grpc.aio.AioRpcError:
                pass  # the call's outcome is what the flow makes of it
            except asyncio.CancelledError:
                if not call.cancelled():  # as grpc.aio's __await__ does
                    call.cancel()
                if self._state != _FINISHED and not self._lost(call):
                    self.cancel()  # the awaiting task was cancelled: so is the call
                    raise
        while self._state != _FINISHED:
            yield from self._changed(cancels=True).__await__()
        call = self._call
        if call is None:
            raise self._failure()
        return (yield from call.__await__())


class _StreamResponse(_Call):
    """Read (or iterated) for its responses; the first one commits the call."""

    _reads_first = True
    #: The committed attempt's first message, read by the call itself, not yet handed out.
    _first: Any = _NOTHING
    _style: str | None = None
    _iterator: AsyncIterator[Any] | None = None

    def _read_first(self, attempt: Attempt[_Sub] | None, call: Any) -> None:
        _keep(self._loop.create_task(self._first_of(attempt, call)))

    async def _first_of(self, attempt: Attempt[_Sub] | None, call: Any) -> None:
        """Read an attempt's first message: it commits the call; none means it ended."""
        try:
            message = await call.read()
        except (Exception, asyncio.CancelledError):
            message = _EOF  # it ended, and its status says how
        if message is _EOF:
            if attempt is None:
                self._hot_ended(call)
            else:
                self._ended(attempt, call)
            return
        if attempt is None:
            if self._hot is not None:  # the hot path's attempt: committed, no flow needed
                self._drop_alarm()  # no hedge after it
                self._state = _COMMITTED
                self._first = message
                self._notify()
                call.add_done_callback(self._hot_ended)
                return
            flow = self._flow  # adopted meanwhile (the application cancelled)
            assert flow is not None
            attempt = flow.attempts[0]
        flow = self._flow
        assert flow is not None
        self._run(flow.on_response(attempt, self._loop.time()))
        if flow.committed is attempt and self._call is call:
            self._first = message
            self._notify()
        call.add_done_callback(functools.partial(self._ended, attempt))

    def _use(self, style: str) -> None:
        if self._style is None:
            self._style = style
        elif self._style != style:
            raise grpc.aio.UsageError(_API_STYLE_ERROR)

    async def read(self) -> Any:
        self._use("read")
        return await self._read()

    async def _read(self) -> Any:
        while True:
            first = self._first
            if first is not _NOTHING:
                self._first = _NOTHING
                return first
            if self._state != _OPEN:
                call = self._call
                if call is None:
                    raise self._failure()
                return await call.read()  # read() all along: grpc.aio forbids mixing styles
            await self._changed(cancels=True)

    def __aiter__(self) -> AsyncIterator[Any]:
        self._use("iterate")
        if self._iterator is None:
            self._iterator = self._responses()
        return self._iterator

    async def _responses(self) -> AsyncIterator[Any]:
        while (response := await self._read()) is not _EOF:
            yield response


class _StreamRequest(_Call):
    """Sends its request messages itself: to every attempt, each one from the first message,
    keeping them until the call commits (then only until its attempt has sent them)."""

    _sends = True
    _closing = False  # done_writing() was called (or the request iterator ended)
    _half_closed = False  # an attempt sent every message and its half close
    _writes = True  # write()/done_writing() are allowed (no request iterator)

    def _setup(self, requests: Any) -> None:
        self._kept: list[Any] = []  # the messages from the _base-th on
        self._base = 0
        self._count = 0  # messages given so far
        self._acked = 0  # messages some attempt has sent
        self._more: list[asyncio.Future[None]] = []  # writers waiting for a message
        if requests is not None:
            self._writes = False
            _keep(self._loop.create_task(self._consume(requests)))

    def _send_to(self, attempt: Attempt[_Sub], call: Any) -> None:
        _keep(self._loop.create_task(self._write_to(attempt, call)))

    def _commit(self, attempt: Attempt[_Sub]) -> None:
        super()._commit(attempt)
        self._wake_writers()

    def _finish(self, attempt: Attempt[_Sub] | None, refusal: Refusal | None) -> None:
        super()._finish(attempt, refusal)
        self._kept = []
        self._wake_writers()

    def _wake_writers(self) -> None:
        more, self._more = self._more, []
        for waiter in more:
            if not waiter.done():
                waiter.set_result(None)

    async def _write_to(self, attempt: Attempt[_Sub], call: Any) -> None:
        """Send every message to one attempt, then its half close; stop when it ends."""
        sent = 0
        try:
            while not attempt.ended and self._state != _FINISHED:
                if sent < self._base:  # the call committed to another attempt
                    return
                if sent < self._count:
                    await call.write(self._kept[sent - self._base])
                    sent += 1
                    if sent > self._acked:
                        self._acked = sent
                        self._notify()
                    if self._state == _COMMITTED and self._call is call:
                        del self._kept[: sent - self._base]  # kept for no replay now
                        self._base = sent
                elif self._closing:
                    await call.done_writing()
                    if not attempt.ended and not self._half_closed:
                        self._half_closed = True
                        self._notify()
                    return
                else:
                    waiter = self._loop.create_future()
                    self._more.append(waiter)
                    await waiter
        except (Exception, asyncio.CancelledError):
            return  # the attempt ended: its status says how

    async def _put(self, message: Any) -> None:
        """Send one more request message (to every attempt, present and to come)."""
        if self._closing:
            raise asyncio.InvalidStateError(_RPC_HALF_CLOSED)
        if self._state == _FINISHED:
            await self._write_after_end(message)
            return
        index = self._count
        self._kept.append(message)
        self._count = index + 1
        flow = self._flow
        if self._state == _OPEN and flow is not None:
            size = _size_of(message, self._owner._serializer)
            self._run(flow.kept(size, self._loop.time()))
        self._wake_writers()
        while self._acked <= index:  # written once some attempt has sent it
            if self._state == _FINISHED:
                await self._write_after_end(message)
                return
            await self._changed(cancels=True)

    async def _write_after_end(self, message: Any) -> None:
        call = self._call
        if call is None:
            raise self._failure()
        await call.write(message)  # grpc.aio's own error for a call that has ended

    async def _close(self) -> None:
        if self._state == _FINISHED:
            return
        self._closing = True
        self._wake_writers()
        while not self._half_closed and self._state != _FINISHED:
            await self._changed(cancels=True)

    async def write(self, request: Any) -> None:
        if not self._writes:
            raise grpc.aio.UsageError(_API_STYLE_ERROR)
        await self._put(request)

    async def done_writing(self) -> None:
        if not self._writes:
            raise grpc.aio.UsageError(_API_STYLE_ERROR)
        await self._close()

    async def _consume(self, requests: Any) -> None:
        """Send what the application's request iterator yields, as grpc.aio does."""
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    if not await self._put_quietly(request):
                        return
            else:
                for request in requests:
                    if not await self._put_quietly(request):
                        return
            await self._close()
        except Exception:
            # grpc.aio cancels a call whose request iterator raised (and logs it at debug).
            log.debug("the request iterator of a call raised", exc_info=True)
            self.cancel()

    async def _put_quietly(self, request: Any) -> bool:
        if self._state == _FINISHED:
            return False
        try:
            await self._put(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return False
        return True


class _UnaryUnaryCall(_UnaryResponse, _UnaryUnaryCallBase):
    pass


class _UnaryStreamCall(_StreamResponse, _UnaryStreamCallBase):
    pass


class _StreamUnaryCall(_StreamRequest, _UnaryResponse, _StreamUnaryCallBase):
    pass


class _StreamStreamCall(_StreamRequest, _StreamResponse, _StreamStreamCallBase):
    pass


class _MultiCallable(MultiCallableBase[grpc.aio.Channel]):
    """The aio twin's calls: each one a call object driving its flow."""

    _call_type: type[_Call]

    def __init__(self, channel: BalancedChannel, *args: Any) -> None:
        super().__init__(channel, *args)
        self._channel = channel


class _UnaryRequest(_MultiCallable):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        info, metadata = self._resolve(metadata, wait_for_ready)
        channel = self._channel
        resilience = channel._resilience
        plan = resilience.plans.get(self._method) or resilience.plan(self._method)
        # The call object, as _Call._new makes it (inlined: no __init__ frame on the hot path).
        call = self._call_type()
        call._owner = self
        call._loop = asyncio.get_running_loop()
        call._info = info
        call._plan = plan
        call._args = (request, timeout, metadata, credentials, compression)
        try:
            pick = channel._picker.pick(info)
        except PickError as exc:
            return call._drive(exc)
        sub = pick[0]
        if (
            not plan.inline
            or sub.retired
            or (credentials is not None and channel._credentials is None)
        ):
            return call._drive(pick)
        # The hot path: nothing to apply yet, so no flow unless the attempt fails (or lasts
        # hedgingDelay). It is the flow's Start and on_status, inlined (see _flow.py).
        sub.inflight.append(None)
        call._hot = pick
        call._started = now = call._loop.time()
        delay = plan.hedge_delay
        if delay is not None:
            call._until = now + delay
            alarm = call._alarm = channel._alarms.get(delay) or channel._alarm(delay)
            alarm.add(call)
        try:
            started = (sub.callables.get(self._key) or self._bind(sub))(
                request,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=channel._sub_wait_for_ready,  # it stays with the pick
                compression=compression,
            )
        except Exception as exc:
            return call._hot_failed(exc)
        call._call = started
        if call._reads_first:
            call._read_first(None, started)
        else:
            # On grpc.aio's core call when there is one: its done callbacks take no argument,
            # so no functools.partial a call as through grpc.aio's add_done_callback.
            core = getattr(started, "_cython_call", None)
            (core or started).add_done_callback(call._hot_ended)
        return call


class _StreamRequestCallable(_MultiCallable):
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        info, metadata = self._resolve(metadata, wait_for_ready)
        resilience = self._channel._resilience
        plan = resilience.plans.get(self._method) or resilience.plan(self._method)
        args = (None, timeout, metadata, credentials, compression)
        call = cast(_StreamRequest, self._call_type._new(self, info, plan, args))
        call._setup(request_iterator)
        try:
            pick: Pick[_Sub] | PickError = self._channel._picker.pick(info)
        except PickError as exc:
            pick = exc
        return call._drive(pick)


class _UnaryUnary(_UnaryRequest, _UnaryUnaryBase):
    _call_type = _UnaryUnaryCall


class _UnaryStream(_UnaryRequest, _UnaryStreamBase):
    _call_type = _UnaryStreamCall


class _StreamUnary(_StreamRequestCallable, _StreamUnaryBase):
    _call_type = _StreamUnaryCall


class _StreamStream(_StreamRequestCallable, _StreamStreamBase):
    _call_type = _StreamStreamCall


BalancedChannel._MULTICALLABLES = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}
