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
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from ..policies import Balancer
from ..policies.base import (
    DoneCallback,
    DoneInfo,
    NoMatchError,
    NotReadyError,
    Pick,
    Picker,
    PickError,
    Policy,
    QueuePicker,
)
from ..routing import CallInfo
from ..snapshot import Snapshot
from ._common import (
    CONNECTIVITY_BY_STATE,
    DEFAULT_DRAIN_TIMEOUT,
    STATE_BY_CONNECTIVITY,
    CallRouter,
    ChannelClosedError,
    ClosedPicker,
    MethodKey,
    Subchannel,
    aggregate_state,
    build_endpoints,
    deadline_details,
    plan_update,
)

__all__ = ["BalancedChannel"]

log = logging.getLogger("grpc_etcd.channel")

_Sub = Subchannel[grpc.aio.Channel]
_Start = Callable[[_Sub, "float | None"], Any]

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


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string=details
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


def _track(call: Any, done: DoneCallback) -> None:
    """Report the call's status and latency to the pick's done callback when it ends."""
    start = time.perf_counter()
    loop = asyncio.get_running_loop()

    def finished(ended: Any) -> None:
        # The status is only reachable by awaiting it; it is already there, so this is quick.
        _keep(loop.create_task(_report(ended, done, start, time.perf_counter())))

    call.add_done_callback(finished)


class BalancedChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` over every node of one service; each call goes to the node its
    policy picks (``"version"``: a random READY node of the version the call asks for).

    The asyncio twin of :class:`grpc_etcd.BalancedChannel`, with the same constructor
    plus ``interceptors`` (grpc.aio client interceptors, installed on every sub-channel: they
    run after the pick and see the ``x-version`` metadata). :meth:`update` must be called from
    the event loop's thread. Calls return grpc.aio call objects; a call that cannot get a node
    raises :class:`grpc.aio.AioRpcError` when awaited.
    """

    def __init__(
        self,
        service: str,
        *,
        policy: str | Policy = "version",
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        interceptors: Sequence[Any] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        self._service = service
        self._balancer = Balancer[_Sub](policy=policy)
        self._version = version or None
        self._credentials = credentials
        self._options = tuple(options) if options else ()
        self._interceptors = list(interceptors) if interceptors else None
        self._drain_timeout = drain_timeout
        self._snapshot: Snapshot | None = None
        self._subs: dict[str, _Sub] = {}
        self._picker: Picker[_Sub] = cast("Picker[_Sub]", QueuePicker())
        self._changed = asyncio.Event()  # set (and replaced) when a picker is published
        self._connectivity = grpc.ChannelConnectivity.CONNECTING
        self._publish_pending = False
        self._draining: dict[asyncio.Task[None], _Sub] = {}  # removed nodes' closes
        self._close_callbacks: list[Callable[[], object]] = []
        self._method_keys: dict[MethodKey, object] = {}
        self._closed = False

    # ------------------------------------------------------------ public, beyond grpc.aio

    @property
    def service(self) -> str:
        """The service whose nodes this channel balances over."""
        return self._service

    @property
    def snapshot(self) -> Snapshot | None:
        """The node set the channel follows now (None until the first one arrives)."""
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        """Follow a new node set (call from the event loop's thread).

        Returns once no new call can go to a removed node; a removed node's calls in flight
        keep running for at most ``drain_timeout`` seconds before its channel closes.
        """
        if snapshot.service and snapshot.service != self._service:
            raise ValueError(
                f"snapshot of {snapshot.service!r} given to the channel of {self._service!r}"
            )
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        added, gone = plan_update(snapshot, self._subs)
        for address in added:
            self._subs[address] = self._open(address)
        retired = [self._subs.pop(address) for address in gone]
        self._snapshot = snapshot
        self._publish()
        for sub in retired:
            sub.retired = True
            sub.task.cancel()
            self._drain(sub)
        for address in added:
            sub = self._subs[address]
            sub.task = loop.create_task(self._watch(sub))

    def subchannel_states(self) -> dict[str, grpc.ChannelConnectivity]:
        """The connectivity of the connection to each address of the current nodes."""
        return {sub.address: CONNECTIVITY_BY_STATE[sub.state] for sub in self._subs.values()}

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

    async def __aenter__(self) -> BalancedChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel; calls in flight get ``grace`` seconds, then are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._publish()
        subs = list(self._subs.values())
        self._subs.clear()
        watchers = [sub.task for sub in subs if sub.task is not None]
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

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryUnary:
        """A unary-unary multicallable whose every call is balanced over the nodes."""
        return _UnaryUnary(
            self,
            "unary_unary",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryStream:
        """A unary-stream multicallable whose every call is balanced over the nodes."""
        return _UnaryStream(
            self,
            "unary_stream",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamUnary:
        """A stream-unary multicallable whose every call is balanced over the nodes."""
        return _StreamUnary(
            self,
            "stream_unary",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamStream:
        """A stream-stream multicallable whose every call is balanced over the nodes."""
        return _StreamStream(
            self,
            "stream_stream",
            method,
            request_serializer,
            response_deserializer,
            _registered_method,
        )

    def __repr__(self) -> str:
        return (
            f"<aio.BalancedChannel {self._service} nodes={len(self._snapshot or ())} "
            f"{self._connectivity.name}>"
        )

    # ------------------------------------------------------------ picking

    def _failure(self, info: CallInfo, exc: PickError, waited: bool) -> BaseException | None:
        """The error a refused pick ends the call with, or None if the call should wait."""
        if isinstance(exc, NotReadyError):
            if exc.failure is not None and not info.wait_for_ready:
                return _rpc_error(grpc.StatusCode.UNAVAILABLE, exc.failure)
            return None
        if isinstance(exc, NoMatchError):
            return _rpc_error(grpc.StatusCode.UNAVAILABLE, exc.details)
        if isinstance(exc, ChannelClosedError):
            if waited:
                return _rpc_error(grpc.StatusCode.CANCELLED, "Channel closed!")
            return grpc.aio.UsageError("Channel is closed.")
        return _rpc_error(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _wait_pick(self, info: CallInfo, deadline: float | None) -> Pick[_Sub]:
        """The slow path: wait for a picker with a node for this call, or raise its error."""
        loop = asyncio.get_running_loop()
        while True:
            changed = self._changed
            try:
                return self._picker.pick(info)
            except PickError as exc:
                failure = self._failure(info, exc, waited=True)
                if failure is not None:
                    raise failure from None
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise _rpc_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, deadline_details(self._service, info)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _method_key(self, key: MethodKey) -> object:
        token = self._method_keys.get(key)
        if token is None:
            token = self._method_keys.setdefault(key, object())
        return token

    # ------------------------------------------------------------ sub-channels

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

    def _publish_soon(self) -> None:
        # Many sub-channels change at once (start-up, a network blip): one picker for them all.
        if not self._publish_pending:
            self._publish_pending = True
            asyncio.get_running_loop().call_soon(self._publish_now)

    def _publish_now(self) -> None:
        self._publish_pending = False
        if not self._closed:
            self._publish()

    def _publish(self) -> None:
        """Build and publish a new picker; wake the calls waiting for one."""
        if self._closed:
            self._picker = cast("Picker[_Sub]", ClosedPicker())
        else:
            self._picker = self._balancer.build(build_endpoints(self._snapshot, self._subs))
        self._connectivity = aggregate_state(
            (sub.state for sub in self._subs.values()),
            has_snapshot=self._snapshot is not None,
            closed=self._closed,
        )
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class _MultiCallable:
    """What the four kinds share: route the call, pick, reuse the sub-channel's multicallable."""

    _deferred: type[_Deferred]

    def __init__(
        self,
        channel: BalancedChannel,
        kind: str,
        method: str,
        request_serializer: Callable[[Any], bytes] | None,
        response_deserializer: Callable[[bytes], Any] | None,
        registered: bool | None,
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._method = method
        self._serializer = request_serializer
        self._deserializer = response_deserializer
        self._registered = bool(registered)
        self._resolve = CallRouter(method, channel._version).resolve
        self._key = channel._method_key(
            (kind, method, request_serializer, response_deserializer, self._registered)
        )

    def _bind(self, sub: _Sub) -> Any:
        """Create this method's multicallable on ``sub`` once; later calls reuse it."""
        factory = getattr(sub.channel, self._kind)
        if self._registered:
            callable_ = factory(self._method, self._serializer, self._deserializer, True)
        else:
            # grpcio <= 1.62 rejects _registered_method: pass it only when it is set.
            callable_ = factory(self._method, self._serializer, self._deserializer)
        sub.callables[self._key] = callable_
        return callable_

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
            failure = self._channel._failure(info, exc, waited=False)
            if isinstance(failure, grpc.aio.UsageError):
                raise failure from None

            def start(sub: _Sub, timeout: float | None) -> Any:
                return (sub.callables.get(self._key) or self._bind(sub))(
                    first,
                    timeout=timeout,
                    metadata=metadata,
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                )

            return self._deferred(self._channel, info, failure, start, timeout)
        call = (sub.callables.get(self._key) or self._bind(sub))(
            first,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )
        if done is not None:
            _track(call, done)
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
        self._deadline = None if timeout is None else self._loop.time() + timeout
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
        timeout = None if self._deadline is None else max(0.0, self._deadline - self._loop.time())
        self._call = start(sub, timeout)
        if done is not None:
            _track(self._call, done)

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
        return None if self._deadline is None else max(0.0, self._deadline - self._loop.time())

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


class _DeferredUnaryStream(_Deferred, _UnaryStreamCallBase):
    pass


class _DeferredStreamUnary(_Deferred, _StreamUnaryCallBase):
    pass


class _DeferredStreamStream(_Deferred, _StreamStreamCallBase):
    pass


class _UnaryUnary(_MultiCallable, _UnaryUnaryBase):
    _deferred = _DeferredUnaryUnary

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready, compression)


class _UnaryStream(_MultiCallable, _UnaryStreamBase):
    _deferred = _DeferredUnaryStream

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._invoke(request, timeout, metadata, credentials, wait_for_ready, compression)


class _StreamUnary(_MultiCallable, _StreamUnaryBase):
    _deferred = _DeferredStreamUnary

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


class _StreamStream(_MultiCallable, _StreamStreamBase):
    _deferred = _DeferredStreamStream

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
