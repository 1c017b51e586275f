"""The sync BalancedChannel: one grpc channel per node, and a policy that picks one per call.

Knowing which sub-channels are READY, measured with 1,000 idle endpoints
(benchmarks/channel_idle_cpu.py): grpc's ``Channel.subscribe()`` starts a thread per channel
that wakes every 0.2 s (about half a core); a thread per channel blocked in cygrpc's
``watch_connectivity_state`` still wakes every 0.2 s to check for signals (about 13%, and
``close()`` waits for the pending watch). So one monitor thread per BalancedChannel reads every
sub-channel's state instead - a C call of about 1 us - every 0.2 s when nothing moves (about
1% of a core), and every few milliseconds right after a change, a new snapshot or a call that
has to wait for a node.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc

from .._closing import Closing
from ..config import ServiceConfig
from ..policies.base import DoneCallback, DoneInfo, PickError, Policy
from ..retry import AVOID_TRIES, CallRetry
from ..routing import CallInfo
from ._base import DEFAULT_DRAIN_TIMEOUT, ChannelBase, MultiCallableBase
from ._call import CLOSED, Refusal, deadline_after, deadline_refusal, refusal, time_left
from ._health import HealthWatch
from ._resilience import retry_delay
from ._resilience import status_name as _code_name
from ._subchannel import STATE_BY_CODE, Subchannel

__all__ = ["BalancedChannel", "FailedCall"]

log = logging.getLogger("grpc_etcd.channel")

# Right after a change, re-check every 1 ms, doubling while nothing moves: a loopback connect
# takes about a millisecond, and the first call on a new channel waits for it.
_POLL_FAST = 0.001
# When nothing moves: the period of grpc's own Channel.subscribe() polling, so losing a
# connection is noticed as fast as with stock grpc.
_POLL_SLOW = 0.2

_Sub = Subchannel[grpc.Channel]
_Acquired = tuple[_Sub, DoneCallback | None, float | None]
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


def _outcome(exc: BaseException) -> DoneInfo:
    """What a done callback hears about a call that raised ``exc`` as it started."""
    return DoneInfo(_code_name(exc) if isinstance(exc, grpc.RpcError) else "UNKNOWN", 0.0)


def _failed(refused: Refusal) -> BaseException:
    """The sync twin's failed call for a refusal (grpc's own ValueError on a closed channel)."""
    if refused is CLOSED:
        return ValueError("Cannot invoke RPC on closed channel!")
    return FailedCall(grpc.StatusCode[refused.code], refused.details)


def _timed(done: DoneCallback, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call and report its status and latency to the pick's done callback."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except BaseException as exc:
        code = _code_name(exc) if isinstance(exc, grpc.RpcError) else "UNKNOWN"
        done(DoneInfo(code, time.perf_counter() - start))
        raise
    done(DoneInfo("OK", time.perf_counter() - start))
    return result


def _track(call: Any, sub: _Sub, done: DoneCallback | None) -> None:
    """Count a non-blocking call (future, stream) as in flight on ``sub`` until it ends."""
    if done is None:
        call.add_done_callback(sub.release)
        return
    inflight = sub.inflight
    start = time.perf_counter()

    def finished(ended: Any) -> None:
        inflight.pop()
        done(DoneInfo(_code_name(ended), time.perf_counter() - start))

    call.add_done_callback(finished)


def _core(channel: grpc.Channel) -> Any:
    """The cygrpc channel under ``channel``: grpc.Channel has no public non-blocking state
    query, its cygrpc channel has one. Interceptors wrap the channel (grpc's own
    ``intercept_channel``, OpenTelemetry's instrumentor around ``grpc.insecure_channel``),
    each keeping the one it wraps as ``_channel``: unwrap them."""
    core: Any = channel
    while not hasattr(core, "check_connectivity_state"):
        core = core._channel
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
        for sub in subs:
            sub.channel.close()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("close callback of the channel of %s failed", self._service)

    # ------------------------------------------------------------ picking

    def _acquire(self, info: CallInfo, timeout: float | None) -> _Acquired:
        """The sub-channel for one call, counted in flight; the caller must pop it when done."""
        try:
            sub, done = self._picker.pick(info)
        except PickError:
            return self._wait(info, timeout)
        sub.inflight.append(None)
        if sub.retired:
            self._discard(sub, done)
            return self._wait(info, timeout)
        return sub, done, timeout

    def _acquire_avoiding(
        self, info: CallInfo, timeout: float | None, tried: set[str]
    ) -> _Acquired:
        """Like :meth:`_acquire`, but a node this call already tried only when no other comes."""
        for _ in range(AVOID_TRIES):
            sub, done, left = self._acquire(info, timeout)
            if sub.address not in tried:
                return sub, done, left
            self._discard(sub, done)
        return self._acquire(info, timeout)

    def _wait(self, info: CallInfo, timeout: float | None) -> _Acquired:
        """The slow path: wait for a picker that has a node for this call, or fail it."""
        deadline = deadline_after(timeout, time.monotonic())
        waited = False
        while True:
            changed = self._changed
            try:
                sub, done = self._picker.pick(info)
            except PickError as exc:
                refused = refusal(exc, info, waited=waited)
                if refused is not None:
                    self._resilience.refused(refused.code)
                    raise _failed(refused) from None
            else:
                sub.inflight.append(None)
                if not sub.retired:
                    return sub, done, time_left(deadline, time.monotonic())
                self._discard(sub, done)
                continue
            left = time_left(deadline, time.monotonic())
            if left == 0.0:
                self._resilience.refused("DEADLINE_EXCEEDED")
                raise _failed(deadline_refusal(self._service, info))
            self._kick.set()  # a call is waiting: have the monitor look closely
            changed.wait(left)
            waited = True

    # ------------------------------------------------------------ the base's hooks

    def _open(self, address: str) -> _Sub:
        if self._credentials is None:
            channel = grpc.insecure_channel(address, options=self._options)
        else:
            channel = grpc.secure_channel(address, self._credentials, options=self._options)
        sub = Subchannel(address, channel)
        sub.core = _core(channel)
        sub.code = sub.core.check_connectivity_state(True)
        sub.state = STATE_BY_CODE[sub.code]
        return sub

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

    def _wake(self) -> None:
        changed, self._changed = self._changed, threading.Event()
        changed.set()

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
            idle = not (self._subs or self._retired)
            kicked = self._kick.wait(None if idle else interval)
            self._kick.clear()
            if self._closed:
                return
            try:
                moved = self._sweep()
                if moved or self._dirty:
                    self._dirty = False
                    with self._lock:
                        if self._closed:
                            return
                        self._publish()
                self._drain()
                self._deliver()
                self._resilience.tick()
            except Exception:  # never let one bad round stop the monitoring
                log.exception("monitor of the channel of %s failed", self._service)
                moved = False
            interval = _POLL_FAST if moved or kicked else min(interval * 2, _POLL_SLOW)


class _MultiCallable(MultiCallableBase[grpc.Channel]):
    """The sync twin's calls: pick, count in flight, report to the pick's done callback."""

    def __init__(self, channel: BalancedChannel, *args: Any) -> None:
        super().__init__(channel, *args)
        self._channel = channel

    def _on(
        self,
        sub: _Sub,
        name: str | None,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """Start the call on ``sub``'s own multicallable (its ``name`` method if given).

        ``wait_for_ready`` is the pick's business (the channel waits for a usable node); on the
        node's own connection it would make a call picked onto a connection that just died wait
        for it until the deadline instead of failing over, so it is not passed on.
        """
        callable_ = sub.callables.get(self._key) or self._bind(sub)
        if name is not None:
            callable_ = getattr(callable_, name)
        return callable_(request, timeout, metadata, credentials, False, compression)

    def _retry(
        self,
        error: grpc.RpcError,
        sub: _Sub,
        info: CallInfo,
        name: str | None,
        started: float,
        request: Any,
        timeout: float | None,
        *args: Any,
    ) -> Any:
        """After a failed blocking unary attempt: retry per the method's policy (and once,
        transparently, a call that never reached a server), each time on an untried node."""
        channel = self._channel
        retry = channel._resilience.call_retry(self._method)
        deadline = deadline_after(timeout, started)
        while True:
            retry.started(sub.address)
            delay = retry_delay(retry, error, time_left(deadline, time.monotonic()))
            if delay is None:
                channel._resilience.call_ended(self._method, retry)
                raise error
            if delay:
                time.sleep(delay)  # the policy's backoff; bounded by the call's deadline
            left = time_left(deadline, time.monotonic())
            sub, done, left = channel._acquire_avoiding(info, left, retry.tried)
            try:
                if done is None:
                    result = self._on(sub, name, request, left, *args)
                else:
                    result = _timed(done, self._on, sub, name, request, left, *args)
                channel._resilience.succeeded()
                retry.started(sub.address)  # the attempt that succeeded counts too
                channel._resilience.call_ended(self._method, retry)
                return result
            except grpc.RpcError as exc:
                error = exc
            finally:
                sub.inflight.pop()

    def _blocking(
        self,
        name: str | None,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """A blocking call (``__call__``, ``with_call``): ends before this returns."""
        info, metadata = self._resolve(metadata, wait_for_ready)
        sub, done, timeout = self._channel._acquire(info, timeout)
        args = (request, timeout, metadata, credentials, wait_for_ready, compression)
        try:
            if done is None:
                return self._on(sub, name, *args)
            return _timed(done, self._on, sub, name, *args)
        finally:
            sub.inflight.pop()

    def _start(
        self,
        name: str | None,
        request: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """Start a non-blocking call (future or stream), tracked until it ends."""
        info, metadata = self._resolve(metadata, wait_for_ready)
        try:
            sub, done, timeout = self._channel._acquire(info, timeout)
        except FailedCall as failed:
            return failed
        try:
            call = self._on(
                sub, name, request, timeout, metadata, credentials, wait_for_ready, compression
            )
        except BaseException as exc:
            sub.inflight.pop()
            if done is not None:
                done(_outcome(exc))
            raise
        _track(call, sub, done)
        return call


class _UnaryUnary(_MultiCallable, _UnaryUnaryBase):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        started = time.monotonic()
        info, metadata = self._resolve(metadata, wait_for_ready)
        # _acquire and _on inlined: this is the hottest path.
        channel = self._channel
        try:
            sub, done = channel._picker.pick(info)
        except PickError:
            sub, done, left = channel._wait(info, timeout)
        else:
            left = timeout
            sub.inflight.append(None)
            if sub.retired:
                channel._discard(sub, done)
                sub, done, left = channel._wait(info, timeout)
        try:
            if done is None:
                result = (sub.callables.get(self._key) or self._bind(sub))(
                    request, left, metadata, credentials, False, compression
                )  # wait_for_ready stays with the pick: see _on
            else:
                result = _timed(
                    done, self._on, sub, None, request, left, metadata, credentials,
                    wait_for_ready, compression,
                )  # fmt: skip
            channel._resilience.succeeded()
            return result
        except grpc.RpcError as exc:
            error = exc
        finally:
            sub.inflight.pop()
        return self._retry(
            error, sub, info, None, started, request, timeout, metadata, credentials,
            wait_for_ready, compression,
        )  # fmt: skip

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        started = time.monotonic()
        info, metadata = self._resolve(metadata, wait_for_ready)
        sub, done, left = self._channel._acquire(info, timeout)
        args = (request, left, metadata, credentials, wait_for_ready, compression)
        try:
            outcome: tuple[Any, grpc.Call] = (
                self._on(sub, "with_call", *args)
                if done is None
                else _timed(done, self._on, sub, "with_call", *args)
            )
            self._channel._resilience.succeeded()
            return outcome
        except grpc.RpcError as exc:
            error = exc
        finally:
            sub.inflight.pop()
        retried: tuple[Any, grpc.Call] = self._retry(
            error, sub, info, "with_call", started, *args[:1], timeout, *args[2:]
        )
        return retried

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        started = time.monotonic()
        info, metadata = self._resolve(metadata, wait_for_ready)
        try:
            acquired = self._channel._acquire(info, timeout)
        except FailedCall as failed:
            return failed
        rest = (metadata, credentials, wait_for_ready, compression)
        return _RetryingFuture(
            self, info, request, deadline_after(timeout, started), rest, acquired
        )


class _RetryingFuture(_FutureBase, grpc.Call):
    """A unary ``future()`` call: grpc's own future of the current attempt, sent again (on a
    node the call has not tried) when an attempt fails in a way the method's retry policy or
    gRPC's transparent retry retries; it completes with the last attempt. Attempts after the
    first start on a thread of their own: picking one may wait for a node, which grpc's
    callback thread must never do."""

    def __init__(
        self,
        multicallable: _UnaryUnary,
        info: CallInfo,
        request: Any,
        deadline: float | None,
        rest: tuple[Any, ...],
        acquired: _Acquired,
    ) -> None:
        self._multicallable = multicallable
        self._info = info
        self._request = request
        self._deadline = deadline
        self._rest = rest
        self._retry: CallRetry | None = None  # made at the first failure
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False
        self._call: Any = None
        self._start(*acquired)

    def _start(self, sub: _Sub, done: DoneCallback | None, left: float | None) -> None:
        try:
            call = self._multicallable._on(sub, "future", self._request, left, *self._rest)
        except BaseException as exc:
            sub.inflight.pop()
            if done is not None:
                done(_outcome(exc))
            raise
        _track(call, sub, done)
        self._address = sub.address
        self._call = call
        call.add_done_callback(self._ended)

    def _ended(self, call: Any) -> None:
        """An attempt ended (on grpc's callback thread): finish, or start the next one."""
        if call is not self._call:
            return
        resilience = self._multicallable._channel._resilience
        error = None if self._cancelled or call.cancelled() else call.exception()
        if error is None:
            if not call.cancelled():
                resilience.succeeded()
            if self._retry is not None:
                self._retry.started(self._address)
                resilience.call_ended(self._info.method, self._retry)
            self._finish()
            return
        retry = self._retry
        if retry is None:
            retry = self._retry = resilience.call_retry(self._info.method)
        retry.started(self._address)
        delay = retry_delay(retry, error, time_left(self._deadline, time.monotonic()))
        if delay is None:
            resilience.call_ended(self._info.method, retry)
            self._finish()
            return
        timer = threading.Timer(delay, self._again)
        timer.daemon = True
        timer.start()

    def _again(self) -> None:
        if self._finished.is_set():  # cancelled meanwhile
            return
        assert self._retry is not None
        channel = self._multicallable._channel
        left = time_left(self._deadline, time.monotonic())
        try:
            acquired = channel._acquire_avoiding(self._info, left, self._retry.tried)
            self._start(*acquired)
        except FailedCall as failed:
            self._call = failed
            self._finish()
        except BaseException:
            log.exception("a retry of %s failed to start", self._info.method)
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._finished.is_set():
                return
            self._finished.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback of a call of %s failed", self._info.method)

    def _ended_call(self, timeout: float | None) -> Any:
        if not self._finished.wait(timeout):
            raise grpc.FutureTimeoutError()
        if self._cancelled:
            raise grpc.FutureCancelledError()
        return self._call

    # grpc.Future

    def cancel(self) -> bool:
        with self._lock:
            if self._finished.is_set():
                return False
            self._cancelled = True
            call = self._call
        call.cancel()  # its done callback finishes this call ...
        self._finish()  # ... unless it had ended (a retry was due)
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def running(self) -> bool:
        return not self._finished.is_set()

    def done(self) -> bool:
        return self._finished.is_set()

    def result(self, timeout: float | None = None) -> Any:
        return self._ended_call(timeout).result()

    def exception(self, timeout: float | None = None) -> Any:
        return self._ended_call(timeout).exception()

    def traceback(self, timeout: float | None = None) -> Any:
        return self._ended_call(timeout).traceback()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._finished.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    # grpc.Call (the last attempt's, once it ended)

    def initial_metadata(self) -> Any:
        return self._ended_call(None).initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._ended_call(None).trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._finished.wait() and self._cancelled:
            return grpc.StatusCode.CANCELLED
        return cast(grpc.StatusCode, self._call.code())

    def details(self) -> str:
        if self._finished.wait() and self._cancelled:
            return "Locally cancelled by application!"
        return cast(str, self._call.details())

    def is_active(self) -> bool:
        return not self._finished.is_set()

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpc's own: None
        return time_left(self._deadline, time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.add_done_callback(lambda _future: callback())
        return True


class _UnaryStream(_MultiCallable, _UnaryStreamBase):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        if self._channel._resilience.retries(self._method):
            started = time.monotonic()
            info, metadata = self._resolve(metadata, wait_for_ready)
            rest = (metadata, credentials, wait_for_ready, compression)
            return _RetryingStream(self, info, request, timeout, rest, started)
        return self._start(
            None, request, timeout, metadata, credentials, wait_for_ready, compression
        )


class _RetryingStream:
    """A server-streaming call of a method with a retry policy: until its first response
    arrives, a failed attempt is retried (on an untried node) as gRPC does; after it, the
    call is committed. Everything else is the current attempt's grpc call."""

    def __init__(
        self,
        multicallable: _UnaryStream,
        info: CallInfo,
        request: Any,
        timeout: float | None,
        rest: tuple[Any, ...],
        started: float,
    ) -> None:
        self._multicallable = multicallable
        self._channel = multicallable._channel
        self._info = info
        self._request = request
        self._rest = rest
        self._deadline = deadline_after(timeout, started)
        self._retry = self._channel._resilience.call_retry(info.method)
        self._committed = False
        self._call: Any = self._attempt()

    def _attempt(self) -> Any:
        left = time_left(self._deadline, time.monotonic())
        sub, done, left = self._channel._acquire_avoiding(self._info, left, self._retry.tried)
        self._retry.started(sub.address)
        try:
            call = self._multicallable._on(sub, None, self._request, left, *self._rest)
        except BaseException as exc:
            sub.inflight.pop()
            if done is not None:
                done(_outcome(exc))
            raise
        _track(call, sub, done)
        return call

    def __iter__(self) -> _RetryingStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                response = next(self._call)
            except grpc.RpcError as error:
                if self._committed:
                    raise
                delay = retry_delay(self._retry, error, time_left(self._deadline, time.monotonic()))
                if delay is None:
                    self._channel._resilience.call_ended(self._info.method, self._retry)
                    raise
                if delay:
                    time.sleep(delay)  # the policy's backoff, bounded by the deadline
                self._call = self._attempt()
                continue
            except StopIteration:
                self._commit()
                raise
            self._commit()
            return response

    def _commit(self) -> None:
        if not self._committed:
            self._committed = True
            self._channel._resilience.succeeded()
            self._channel._resilience.call_ended(self._info.method, self._retry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def _stream_request_call(start: Callable[..., Any], name: str | None) -> Callable[..., Any]:
    """One method of a request-stream multicallable, written once for the three of
    ``stream_unary`` and the one of ``stream_stream``: ``start`` is ``_MultiCallable._blocking``
    or ``._start``, ``name`` the method of the node's own multicallable (None: the call)."""

    def call(
        self: _MultiCallable,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return start(
            self, name, request_iterator, timeout, metadata, credentials, wait_for_ready,
            compression,
        )  # fmt: skip

    call.__name__ = call.__qualname__ = name or "__call__"
    return call


class _StreamUnary(_MultiCallable, _StreamUnaryBase):
    __call__ = _stream_request_call(_MultiCallable._blocking, None)
    with_call = _stream_request_call(_MultiCallable._blocking, "with_call")
    future = _stream_request_call(_MultiCallable._start, "future")


class _StreamStream(_MultiCallable, _StreamStreamBase):
    __call__ = _stream_request_call(_MultiCallable._start, None)


BalancedChannel._MULTICALLABLES = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}
