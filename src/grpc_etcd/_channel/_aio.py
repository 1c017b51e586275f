"""The asyncio BalancedChannel: the twin of :class:`grpc_etcd.BalancedChannel`.

One ``grpc.aio`` channel per node, each watched by a task blocked in ``wait_for_state_change``
(grpc's asyncio completion queue wakes it only on a change: no polling at all). A call whose
node is READY goes straight to that node's own grpc call object; only a call that has to wait
for a node (or fails to get one) is wrapped, so that ``__call__`` can return at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from .._closing import AsyncClosing
from ..config import ServiceConfig
from ..policies.base import DoneCallback, DoneInfo, Pick, PickError, Policy
from ..retry import AVOID_TRIES
from ..routing import CallInfo
from ..snapshot import Snapshot
from ._base import DEFAULT_DRAIN_TIMEOUT, ChannelBase, MultiCallableBase
from ._call import (
    CLOSED,
    THROWN_AWAY,
    Refusal,
    deadline_after,
    deadline_refusal,
    refusal,
    time_left,
)
from ._health import AsyncHealthWatch
from ._resilience import retry_delay
from ._subchannel import CONNECTIVITY_BY_STATE, STATE_BY_CONNECTIVITY, Subchannel

__all__ = ["BalancedChannel"]

log = logging.getLogger("grpc_etcd.channel")

_Sub = Subchannel[grpc.aio.Channel]
_Start = Callable[[_Sub, "DoneCallback | None", "float | None"], Any]

# grpc.aio's own text for a call cancelled by the application.
_LOCAL_CANCELLATION = "Locally cancelled by application!"

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


def _rpc_error(refused: Refusal) -> grpc.aio.AioRpcError:
    """The aio twin's failed call for a refusal: grpc.aio's own error type."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode[refused.code],
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=refused.details,
        debug_error_string=refused.details,
    )


async def _report(call: Any, done: DoneCallback, start: float, end: float) -> None:
    try:
        code = await call.code()
    except Exception:  # cancelled or broken: report what we can
        code = grpc.StatusCode.UNKNOWN
    done(DoneInfo(code.name, end - start))


# Tasks nobody awaits, kept referenced until they finish (asyncio holds only weak references).
_background: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    _background.add(future)
    future.add_done_callback(_background.discard)


def _track(call: Any, sub: _Sub, done: DoneCallback | None) -> None:
    """Count the call as in flight on ``sub`` until it ends; then report to ``done``."""
    if done is None:
        call.add_done_callback(sub.release)
        return
    inflight = sub.inflight
    start = time.perf_counter()
    loop = asyncio.get_running_loop()

    def finished(ended: Any) -> None:
        inflight.pop()
        # The status is only reachable by awaiting it; it is already there, so this is quick.
        _keep(loop.create_task(_report(ended, done, start, time.perf_counter())))

    call.add_done_callback(finished)


class BalancedChannel(ChannelBase[grpc.aio.Channel], AsyncClosing, grpc.aio.Channel):
    """A ``grpc.aio.Channel`` over every node of one service; each call goes to the node its
    policy picks (``"version"``: a random READY node of the version the call asks for).

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

    # ------------------------------------------------------------ picking

    async def _wait_pick(self, info: CallInfo, deadline: float | None) -> Pick[_Sub]:
        """The slow path: wait for a picker with a node for this call, or raise its error."""
        loop = asyncio.get_running_loop()
        while True:
            changed = self._changed
            try:
                return self._picker.pick(info)
            except PickError as exc:
                refused = refusal(exc, info, waited=True)
                if refused is not None:
                    self._resilience.refused(refused.code)
                    raise _rpc_error(refused) from None
            left = time_left(deadline, loop.time())
            if left == 0.0:
                self._resilience.refused("DEADLINE_EXCEEDED")
                raise _rpc_error(deadline_refusal(self._service, info))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

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
        sub = Subchannel(address, channel)
        sub.state = STATE_BY_CONNECTIVITY[channel.get_state(try_to_connect=True)]
        return sub

    def _retire(self, subs: list[_Sub]) -> None:
        for sub in subs:
            sub.task.cancel()
            self._drain(sub)

    def _after_update(self, opened: list[_Sub]) -> None:
        loop = asyncio.get_running_loop()
        for sub in opened:
            sub.task = loop.create_task(self._watch(sub))
        if self._resilience.outlier_detection:
            self._after_configure()  # a config given to the constructor

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _republish_soon(self) -> None:
        self._publish_soon()  # done callbacks and the ticker run on the loop

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

    def _drain(self, sub: _Sub) -> None:
        # grpc.aio's close(grace) waits for the channel's calls in flight, then cancels them.
        task = asyncio.get_running_loop().create_task(sub.channel.close(self._drain_timeout))
        self._draining[task] = sub
        task.add_done_callback(lambda done: self._draining.pop(done, None))

    async def _cut_draining(self, grace: float | None) -> None:
        """Give removed nodes' calls ``grace`` seconds, not the rest of their drain_timeout."""
        tasks = list(self._draining)
        if not tasks:
            return
        if grace:
            await asyncio.wait(tasks, timeout=grace)
        # A second close() is a no-op while the first waits out its grace, so cancel the calls
        # ourselves, through grpc.aio's private _active_calls (grpcio 1.85 has it; without it
        # they run out their drain_timeout).
        for sub in list(self._draining.values()):
            for call in list(getattr(sub.channel, "_active_calls", ())):
                call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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

    def _publish_soon(self) -> None:
        # Many sub-channels change at once (start-up, a network blip): one picker for them all.
        if not self._publish_pending:
            self._publish_pending = True
            asyncio.get_running_loop().call_soon(self._publish_now)

    def _publish_now(self) -> None:
        self._publish_pending = False
        if not self._closed:
            self._publish()


class _MultiCallable(MultiCallableBase[grpc.aio.Channel]):
    """The aio twin's calls: pick, count in flight, report to the pick's done callback."""

    _deferred: type[_Deferred]
    #: The call wrapper that retries a call that never reached a server (None: the kind is
    #: not retried, its requests are not kept).
    _transparent: type[_Transparent] | None = None

    def __init__(self, channel: BalancedChannel, *args: Any) -> None:
        super().__init__(channel, *args)
        self._channel = channel

    def _invoke(
        self,
        first: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        info, metadata = self._resolve(metadata, wait_for_ready)
        try:
            sub, done = self._channel._picker.pick(info)
        except PickError as exc:
            refused = refusal(exc, info, waited=False)
            if refused is CLOSED:
                raise grpc.aio.UsageError("Channel is closed.") from None

            def start(sub: _Sub, done: DoneCallback | None, timeout: float | None) -> Any:
                call = self._begin(sub, done, first, timeout, metadata, credentials, compression)
                transparent = self._transparent
                if transparent is None:
                    return call
                return transparent(
                    call, self, info, sub.address, first, metadata, credentials, compression
                )

            failure = None
            if refused is not None:
                self._channel._resilience.refused(refused.code)
                failure = _rpc_error(refused)
            return self._deferred(self._channel, info, failure, start, timeout)
        if done is not None:
            call = self._begin(sub, done, first, timeout, metadata, credentials, compression)
        else:
            # _begin inlined for picks without a done callback: this is the hottest path.
            sub.inflight.append(None)
            try:
                call = (sub.callables.get(self._key) or self._bind(sub))(
                    first,
                    timeout=timeout,
                    metadata=metadata,
                    credentials=credentials,
                    wait_for_ready=False,  # it stays with the pick, see the sync twin's _on
                    compression=compression,
                )
            except BaseException:
                sub.inflight.pop()
                raise
            call.add_done_callback(sub.release)
        transparent = self._transparent
        if transparent is None:
            return call
        return transparent(call, self, info, sub.address, first, metadata, credentials, compression)

    def _again(
        self,
        info: CallInfo,
        tried: str,
        first: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """The transparent retry's attempt: on a node other than ``tried`` if one comes
        within a few picks (waiting for a node like any call if none is ready)."""
        channel = self._channel

        def start(sub: _Sub, done: DoneCallback | None, left: float | None) -> Any:
            return self._begin(sub, done, first, left, metadata, credentials, compression)

        for _ in range(AVOID_TRIES):
            try:
                sub, done = channel._picker.pick(info)
            except PickError:
                return self._deferred(channel, info, None, start, timeout)
            if sub.address != tried:
                break
            if done is not None:
                done(THROWN_AWAY)
        return start(sub, done, timeout)

    def _begin(
        self,
        sub: _Sub,
        done: DoneCallback | None,
        first: Any,
        timeout: float | None,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        compression: grpc.Compression | None,
    ) -> Any:
        """Start the call on the picked ``sub`` (``done`` observed by the channel's picker),
        counted in flight until it ends."""
        sub.inflight.append(None)
        try:
            call = (sub.callables.get(self._key) or self._bind(sub))(
                first,
                timeout=timeout,
                metadata=metadata,
                credentials=credentials,
                wait_for_ready=False,  # it stays with the pick, see the sync twin's _on
                compression=compression,
            )
        except BaseException:
            sub.inflight.pop()
            if done is not None:
                done(DoneInfo("UNKNOWN", 0.0))
            raise
        _track(call, sub, done)
        return call


class _Deferred:
    """A call whose node is not known yet (it waits for one) or could not be had.

    Forwards everything to the real call once it starts; a failed pick surfaces as the
    ``AioRpcError`` it carries, like any failed grpc.aio call.
    """

    def __init__(
        self,
        channel: BalancedChannel,
        info: CallInfo,
        failure: BaseException | None,
        start: _Start,
        timeout: float | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = deadline_after(timeout, self._loop.time())
        self._call: Any = None
        self._error = failure
        self._callbacks: list[Callable[[Any], None]] = []
        self._task: asyncio.Task[None] | None = None
        if failure is None:
            self._task = self._loop.create_task(self._start(channel, info, start))
            self._task.add_done_callback(self._started)

    async def _start(self, channel: BalancedChannel, info: CallInfo, start: _Start) -> None:
        try:
            sub, done = await channel._wait_pick(info, self._deadline)
        except grpc.aio.AioRpcError as exc:
            self._error = exc
            return
        self._call = start(sub, done, time_left(self._deadline, self._loop.time()))

    def _started(self, _task: asyncio.Task[None]) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._forward(callback)

    def _forward(self, callback: Callable[[Any], None]) -> None:
        if self._call is not None:
            self._call.add_done_callback(lambda _call: callback(self))
        else:
            callback(self)

    async def _resolved(self) -> Any:
        """The real call; raises the pick's error, or CancelledError if cancelled first."""
        if self._task is not None and self._call is None and self._error is None:
            await self._task  # being cancelled here cancels the wait, as it would the call
        if self._error is not None:
            raise self._error
        return self._call

    async def _settled(self) -> Any:
        """The real call, or None if there is none; never raises, never cancels the wait."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait((task,))
        return self._call

    # grpc.aio.RpcContext

    def cancelled(self) -> bool:
        if self._call is not None:
            return bool(self._call.cancelled())
        return self._task is not None and self._task.cancelled()

    def done(self) -> bool:
        if self._call is not None:
            return bool(self._call.done())
        return self._task is None or self._task.done()

    def time_remaining(self) -> float | None:
        if self._call is not None:
            return cast("float | None", self._call.time_remaining())
        return time_left(self._deadline, self._loop.time())

    def cancel(self) -> bool:
        if self._call is not None:
            return bool(self._call.cancel())
        if self._task is None or self._task.done():
            return False
        return self._task.cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._task is not None and not self._task.done():
            self._callbacks.append(callback)
        else:
            self._forward(callback)

    # grpc.aio.Call

    async def initial_metadata(self) -> grpc.aio.Metadata:
        call = await self._settled()
        if call is None:
            return grpc.aio.Metadata()
        return cast("grpc.aio.Metadata", await call.initial_metadata())

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        call = await self._settled()
        if call is None:
            return grpc.aio.Metadata()
        return cast("grpc.aio.Metadata", await call.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        call = await self._settled()
        if call is not None:
            return cast(grpc.StatusCode, await call.code())
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.code()
        return grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        call = await self._settled()
        if call is not None:
            return cast(str, await call.details())
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.details() or ""
        return _LOCAL_CANCELLATION

    async def debug_error_string(self) -> str:
        call = await self._settled()
        if call is not None:
            return cast(str, await call.debug_error_string())
        if isinstance(self._error, grpc.aio.AioRpcError):
            return self._error.debug_error_string() or ""
        return _LOCAL_CANCELLATION

    async def wait_for_connection(self) -> None:
        call = await self._resolved()
        await call.wait_for_connection()

    # responses and requests, for the kinds that have them

    def __await__(self) -> Generator[Any, None, Any]:
        call = yield from self._resolved().__await__()
        return (yield from call.__await__())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        call = await self._resolved()
        async for response in call:
            yield response

    async def read(self) -> Any:
        call = await self._resolved()
        return await call.read()

    async def write(self, request: Any) -> None:
        call = await self._resolved()
        await call.write(request)

    async def done_writing(self) -> None:
        call = await self._resolved()
        await call.done_writing()

    def __repr__(self) -> str:
        if self._call is not None:
            return repr(self._call)
        if self._error is not None:
            return f"<{type(self).__name__} failed: {self._error!r}>"
        return f"<{type(self).__name__} waiting for a node>"


class _DeferredUnaryUnary(_Deferred, _UnaryUnaryCallBase):
    pass


_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


class _DeferredUnaryStream(_Deferred, _UnaryStreamCallBase):
    pass


class _DeferredStreamUnary(_Deferred, _StreamUnaryCallBase):
    pass


class _DeferredStreamStream(_Deferred, _StreamStreamCallBase):
    pass


class _Transparent:
    """A call of a method without a retry policy, as started on its node: everything is that
    grpc.aio call's, except that an attempt which failed before reaching any server (see
    :func:`~grpc_etcd.retry.never_reached_server`) is sent once more, on another node, when its
    outcome is known: gRPC's transparent retry, without a task of its own for calls that
    succeed."""

    def __init__(
        self,
        call: Any,
        owner: _MultiCallable,
        info: CallInfo,
        address: str,
        first: Any,
        metadata: Any,
        credentials: grpc.CallCredentials | None,
        compression: grpc.Compression | None,
    ) -> None:
        self._call = call
        self._final = False  # no retry can come any more: self._call is the call
        self._owner = owner
        self._info = info
        self._address = address
        self._args = (first, metadata, credentials, compression)
        call.add_done_callback(self._ended)

    def _ended(self, call: Any) -> None:
        """The first attempt ended: if it failed, retry now (not when someone looks)."""
        if self._final:
            return
        # Whether it succeeded, without a task: grpc.aio's core call knows (grpcio 1.85 has
        # it); without it, settle in a task.
        core = getattr(call, "_cython_call", None)
        if core is not None and core.is_ok():
            return
        _keep(asyncio.ensure_future(self._settled()))

    def _failed(self, call: Any, error: grpc.aio.AioRpcError) -> Any:
        """``call`` (the current attempt) failed with ``error``: the retry's call, or None if
        it is not retried. A later look at the same failure gets the retry started by the
        first."""
        if call is not self._call:
            return self._call
        if self._final:
            return None
        self._final = True
        resilience = self._owner._channel._resilience
        retry = resilience.call_retry(self._info.method)
        retry.started(self._address)
        left = call.time_remaining()
        if retry_delay(retry, error, left) is None:
            return None
        resilience.call_ended(self._info.method, retry)
        first, metadata, credentials, compression = self._args
        self._call = self._owner._again(
            self._info, self._address, first, left, metadata, credentials, compression
        )
        return self._call

    async def _settled(self) -> Any:
        """The call for good: the current attempt once it ended, or the retry it needed."""
        while not self._final:
            call = self._call
            if await call.code() is not grpc.StatusCode.UNAVAILABLE:
                if call is self._call:
                    self._final = True
                continue
            try:
                await call.wait_for_connection()  # raises the attempt's AioRpcError
            except grpc.aio.AioRpcError as exc:
                self._failed(call, exc)
            else:
                if call is self._call:
                    self._final = True
        return self._call

    # grpc.aio.RpcContext

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        if not self._call.done():
            return False
        if self._final:
            return True
        _keep(asyncio.ensure_future(self._settled()))  # soon known whether a retry follows
        return False

    def time_remaining(self) -> float | None:
        return cast("float | None", self._call.time_remaining())

    def cancel(self) -> bool:
        self._final = True
        return bool(self._call.cancel())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        call = self._call
        if self._final:
            call.add_done_callback(lambda _call: callback(self))
            return

        async def when_settled() -> None:
            (await self._settled()).add_done_callback(lambda _call: callback(self))

        call.add_done_callback(lambda _call: _keep(asyncio.ensure_future(when_settled())))

    # grpc.aio.Call

    async def initial_metadata(self) -> grpc.aio.Metadata:
        call = self._call
        metadata = await call.initial_metadata()
        if metadata or self._final or not call.done():  # headers came: it reached a server
            return cast("grpc.aio.Metadata", metadata)
        return cast("grpc.aio.Metadata", await (await self._settled()).initial_metadata())

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return cast("grpc.aio.Metadata", await (await self._settled()).trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        return cast(grpc.StatusCode, await (await self._settled()).code())

    async def details(self) -> str:
        return cast(str, await (await self._settled()).details())

    async def debug_error_string(self) -> str:
        return cast(str, await (await self._settled()).debug_error_string())

    async def wait_for_connection(self) -> None:
        call = self._call
        try:
            await call.wait_for_connection()
        except grpc.aio.AioRpcError as exc:
            again = self._failed(call, exc)
            if again is None:
                raise
            await again.wait_for_connection()

    def __repr__(self) -> str:
        return repr(self._call)


class _TransparentUnaryUnary(_Transparent, _UnaryUnaryCallBase):
    def __await__(self) -> Generator[Any, None, Any]:
        call = self._call
        try:
            response = yield from call.__await__()
        except grpc.aio.AioRpcError as exc:
            again = self._failed(call, exc)
            if again is None:
                raise
            return (yield from again.__await__())
        self._final = True
        return response


class _TransparentUnaryStream(_Transparent, _UnaryStreamCallBase):
    """Retried transparently before its first response (a call that never reached a server
    has none); grpc.aio's rule holds: read() or iterate, not both."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        call = self._call
        try:
            async for response in call:
                self._final = True
                yield response
            self._final = True
            return
        except grpc.aio.AioRpcError as exc:
            again = self._failed(call, exc)
            if again is None:
                raise
        async for response in again:
            yield response

    async def read(self) -> Any:
        call = self._call
        if self._final:
            return await call.read()
        try:
            response = await call.read()
        except grpc.aio.AioRpcError as exc:
            again = self._failed(call, exc)
            if again is None:
                raise
            return await again.read()
        self._final = True
        return response


class _Retrying(_Deferred):
    """A call of a method with a retry policy: attempts until one succeeds (for a stream: its
    first response arrives), the policy gives up or the deadline comes; each attempt on a node
    the call has not tried yet. Once it succeeds the call is committed: the real one."""

    def __init__(
        self, channel: BalancedChannel, info: CallInfo, start: _Start, timeout: float | None
    ) -> None:
        self._retry = channel._resilience.call_retry(info.method)
        super().__init__(channel, info, None, start, timeout)

    async def _first_step(self, call: Any) -> None:
        """Wait until the attempt counts as a success (raises its AioRpcError if it fails)."""
        raise NotImplementedError

    async def _start(self, channel: BalancedChannel, info: CallInfo, start: _Start) -> None:
        retry = self._retry
        while True:
            try:
                sub, done = await self._pick(channel, info, retry.tried)
            except grpc.aio.AioRpcError as exc:
                self._error = exc
                return
            retry.started(sub.address)
            call = start(sub, done, time_left(self._deadline, self._loop.time()))
            try:
                await self._first_step(call)
            except grpc.aio.AioRpcError as exc:
                delay = retry_delay(retry, exc, time_left(self._deadline, self._loop.time()))
                if delay is None:
                    channel._resilience.call_ended(info.method, retry)
                    self._call = call
                    return
                await asyncio.sleep(delay)  # the policy's backoff, within the deadline
                continue
            except asyncio.CancelledError:
                call.cancel()
                raise
            channel._resilience.succeeded()
            channel._resilience.call_ended(info.method, retry)
            self._call = call
            return

    async def _pick(self, channel: BalancedChannel, info: CallInfo, tried: set[str]) -> Any:
        for _ in range(AVOID_TRIES):
            sub, done = await channel._wait_pick(info, self._deadline)
            if sub.address not in tried:
                return sub, done
            if done is not None:
                done(THROWN_AWAY)
        return await channel._wait_pick(info, self._deadline)


class _RetryingUnaryUnary(_Retrying, _DeferredUnaryUnary):
    async def _first_step(self, call: Any) -> None:
        await call


class _RetryingUnaryStream(_Retrying, _DeferredUnaryStream):
    """Retried until the first response, which is kept and handed out first."""

    _first: Any = None

    async def _first_step(self, call: Any) -> None:
        self._first = await call.read()  # EOF when the stream ended cleanly without one

    def _take_first(self) -> Any:
        first, self._first = self._first, None
        return first

    async def _responses(self) -> AsyncIterator[Any]:
        call = await self._resolved()
        response = self._take_first()
        while response is not _EOF:
            if response is not None:
                yield response
            response = await call.read()  # read() all along: grpc.aio forbids mixing styles

    async def read(self) -> Any:
        call = await self._resolved()
        first = self._take_first()
        return first if first is not None else await call.read()


class _UnaryRequest(_MultiCallable):
    """The calls with one request: retried per the method's policy (the request is kept)."""

    _retrying: type[_Retrying]

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        if not self._channel._resilience.retries(self._method):
            return self._invoke(
                request, timeout, metadata, credentials, wait_for_ready, compression
            )
        info, metadata = self._resolve(metadata, wait_for_ready)

        def start(sub: _Sub, done: DoneCallback | None, left: float | None) -> Any:
            return self._begin(sub, done, request, left, metadata, credentials, compression)

        return self._retrying(self._channel, info, start, timeout)


class _StreamRequest(_MultiCallable):
    """The calls with a request stream: never retried (the requests are gone once sent)."""

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )


class _UnaryUnary(_UnaryRequest, _UnaryUnaryBase):
    _deferred = _DeferredUnaryUnary
    _retrying = _RetryingUnaryUnary
    _transparent = _TransparentUnaryUnary


class _UnaryStream(_UnaryRequest, _UnaryStreamBase):
    _deferred = _DeferredUnaryStream
    _retrying = _RetryingUnaryStream
    _transparent = _TransparentUnaryStream


class _StreamUnary(_StreamRequest, _StreamUnaryBase):
    _deferred = _DeferredStreamUnary


class _StreamStream(_StreamRequest, _StreamStreamBase):
    _deferred = _DeferredStreamStream


BalancedChannel._MULTICALLABLES = {
    "unary_unary": _UnaryUnary,
    "unary_stream": _UnaryStream,
    "stream_unary": _StreamUnary,
    "stream_stream": _StreamStream,
}
