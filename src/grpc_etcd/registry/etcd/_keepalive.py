"""Lease keep-alive: every lease of a client over ONE ``LeaseKeepAlive`` bidi stream.

Cadence: each lease gets a request about every ``ttl / 3`` seconds (at least every
``MIN_INTERVAL``), and at once when it is added or the stream is (re)opened. A response with
``TTL > 0`` confirms the lease: its local expiry becomes (send time of the request it answers) +
TTL, a conservative bound on etcd's own expiry. A response with ``TTL <= 0`` means the lease is
gone (revoked, expired, etcd restarted without its data): it is reported lost and dropped.

When the stream breaks it is re-opened with backoff (``backoff.Backoff``, 0.1 s .. 2 s), on the next
endpoint that is up. A lease whose local expiry passes while no confirmation arrives (stream
down longer than its TTL, or etcd not answering) is reported lost as well: etcd has expired it,
or will have by the time we could ask again. Every handle learns of a loss exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import grpc
import grpc.aio

from grpc_etcd.backoff import Backoff

from ._proto import etcd_pb2 as pb
from ._session import Session
from ._transport import EOF, LEASE_KEEPALIVE, Endpoint, ErrorKind, StreamCall, classify
from ._types import EtcdClientClosedError

__all__ = ["KeepAlive", "KeepAliver"]

_log = logging.getLogger("grpc_etcd.etcd")

MIN_INTERVAL = 0.25  # never send for one lease more often than this
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0


class KeepAlive:
    """Handle of one lease kept alive by ``AsyncEtcdClient.keep_alive``.

    ``lost`` turns True (once) when the lease is gone; ``on_lost(lease_id)`` is then called on
    the client's event loop. ``stop()`` / ``cancel()`` stop keeping the lease alive (they do not
    revoke it). Closing the client stops every keep-alive without reporting a loss.
    """

    def __init__(
        self,
        manager: KeepAliver,
        lease_id: int,
        ttl: int,
        on_lost: Callable[[int], None] | None,
    ) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self._manager = manager
        self._on_lost = on_lost
        self._lost = threading.Event()  # readable/waitable from any thread
        self._lost_async = asyncio.Event()
        self._stopped = False

    @property
    def lost(self) -> bool:
        """True once the lease is known to be gone."""
        return self._lost.is_set()

    @property
    def active(self) -> bool:
        """True while the lease is being kept alive (not lost, not stopped)."""
        return not self._stopped and not self._lost.is_set()

    async def wait_lost(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the lease is lost; return ``lost`` (False on timeout)."""
        if not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._lost_async.wait()
        return self.lost

    def wait_lost_blocking(self, timeout: float | None = None) -> bool:
        """Block the calling thread (never the client's loop) until the lease is lost."""
        return self._lost.wait(timeout)

    def cancel(self) -> None:
        """Stop keeping the lease alive (call on the client's loop). Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._manager.remove(self)

    async def stop(self) -> None:
        """Same as :meth:`cancel`, as a coroutine."""
        self.cancel()

    def report_lost(self) -> None:
        """Mark the lease lost and tell ``on_lost`` (once); called by the keep-aliver."""
        if self._lost.is_set():
            return
        self._stopped = True
        self._lost.set()
        self._lost_async.set()
        if self._on_lost is not None:
            try:
                self._on_lost(self.lease_id)
            except Exception:
                _log.exception("on_lost callback for lease %x failed", self.lease_id)

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("stopped" if self._stopped else "active")
        return f"<KeepAlive lease={self.lease_id:x} ttl={self.ttl} {state}>"


class _LeaseState:
    __slots__ = ("expires", "handles", "lease_id", "next_send", "pending_since", "ttl")

    def __init__(self, lease_id: int, ttl: int, now: float) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self.handles: list[KeepAlive] = []
        self.next_send = now  # send at once
        self.expires = now + ttl  # conservative local expiry (assume granted/refreshed now)
        self.pending_since: float | None = None  # send time of the oldest unanswered request

    def interval(self) -> float:
        return max(self.ttl / 3.0, MIN_INTERVAL)


class _StreamEnded(Exception):
    pass


class KeepAliver:
    """Runs the keep-alive stream of one session, while it has leases."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._leases: dict[int, _LeaseState] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._backoff = Backoff(BACKOFF_BASE, BACKOFF_CAP)  # reset by every response

    # -- called on the loop by the client / handles

    def add(self, lease_id: int, ttl: int, on_lost: Callable[[int], None] | None) -> KeepAlive:
        if self._closed:
            raise EtcdClientClosedError(endpoints=self._session.addresses)
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        loop = asyncio.get_running_loop()
        handle = KeepAlive(self, lease_id, ttl, on_lost)
        state = self._leases.get(lease_id)
        if state is None:
            state = self._leases[lease_id] = _LeaseState(lease_id, ttl, loop.time())
        else:
            state.next_send = loop.time()  # confirm it now
        state.handles.append(handle)
        self._poke()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="grpc-etcd-keepalive")
        return handle

    def remove(self, handle: KeepAlive) -> None:
        state = self._leases.get(handle.lease_id)
        if state is None:
            return
        with contextlib.suppress(ValueError):
            state.handles.remove(handle)
        if not state.handles:
            del self._leases[handle.lease_id]
        self._poke()

    async def close(self) -> None:
        self._closed = True
        self._leases.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def lease_ids(self) -> list[int]:
        return list(self._leases)

    # -- internals

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _lose(self, state: _LeaseState, reason: str) -> None:
        if self._leases.get(state.lease_id) is state:
            del self._leases[state.lease_id]
        _log.warning("lease %x lost: %s", state.lease_id, reason)
        for handle in list(state.handles):
            handle.report_lost()

    def _expire_overdue(self, now: float) -> None:
        for state in list(self._leases.values()):
            if now >= state.expires:
                self._lose(state, f"not confirmed by etcd within its TTL ({state.ttl} s)")

    def _next_expiry(self) -> float | None:
        return min((s.expires for s in self._leases.values()), default=None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        backoff = self._backoff
        session = self._session
        try:
            while True:
                self._expire_overdue(loop.time())
                if not self._leases or self._closed:
                    return
                immediately = False
                endpoint = await session.pick_endpoint(loop.time() + session.timeout)
                if endpoint is not None:
                    try:
                        await self._stream(endpoint)
                    except _StreamEnded:
                        _log.info("keep-alive stream to %s ended; re-opening", endpoint.address)
                    except grpc.aio.AioRpcError as err:
                        if classify(err) is ErrorKind.STALE_TOKEN:
                            session.drop_token()
                            immediately = True
                        else:
                            session.connection_trouble()
                        _log.info(
                            "keep-alive stream to %s broke (%s: %s); re-opening",
                            endpoint.address,
                            err.code(),
                            err.details(),
                        )
                    except Exception as err:  # token refresh failed, ...
                        _log.warning("keep-alive stream to %s failed: %r", endpoint.address, err)
                if not self._leases or self._closed:
                    return
                # wait before the next attempt, but wake for the earliest local expiry
                until = loop.time() + (0.0 if immediately else backoff.next_delay())
                expiry = self._next_expiry()
                if expiry is not None:
                    until = min(until, expiry)
                await asyncio.sleep(max(0.0, until - loop.time()))
        finally:
            # set synchronously with the decision to stop, so add() starts a new task
            if self._task is asyncio.current_task():
                self._task = None

    async def _stream(self, endpoint: Endpoint) -> None:
        """One stream; returns when no lease is left."""
        loop = asyncio.get_running_loop()
        call = await self._session.open_stream(
            endpoint,
            LEASE_KEEPALIVE,
            pb.LeaseKeepAliveRequest.SerializeToString,
            pb.LeaseKeepAliveResponse.FromString,
        )
        now = loop.time()
        for state in self._leases.values():
            state.next_send = now
            state.pending_since = None
        reader = loop.create_task(self._read(call), name="grpc-etcd-keepalive-read")
        wake = self._wake
        assert wake is not None
        try:
            while True:
                if reader.done():
                    reader.result()  # raises the stream's error
                    raise _StreamEnded
                now = loop.time()
                self._expire_overdue(now)
                if not self._leases or self._closed:
                    return
                for state in list(self._leases.values()):
                    if state.next_send <= now:
                        try:
                            await call.write(pb.LeaseKeepAliveRequest(ID=state.lease_id))
                        except asyncio.InvalidStateError:
                            raise _StreamEnded from None
                        if state.pending_since is None:
                            state.pending_since = now
                        state.next_send = now + state.interval()
                if not self._leases:  # lost while we were writing
                    continue
                wake_at = min(min(s.next_send, s.expires) for s in self._leases.values())
                wake.clear()
                waiter = loop.create_task(wake.wait())
                try:
                    await asyncio.wait(
                        {reader, waiter},
                        timeout=max(0.0, wake_at - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
        finally:
            self._session.end_stream(call)
            reader.cancel()
            # collects the reader's outcome; still raises CancelledError if *we* are cancelled
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, call: StreamCall) -> None:
        loop = asyncio.get_running_loop()
        while True:
            response = await call.read()
            if response is EOF:
                raise _StreamEnded
            assert isinstance(response, pb.LeaseKeepAliveResponse)
            self._backoff.reset()
            state = self._leases.get(response.ID)
            if state is None:
                continue
            if response.TTL <= 0:
                self._lose(state, "etcd says it no longer exists (TTL <= 0)")
                continue
            sent = state.pending_since if state.pending_since is not None else loop.time()
            state.expires = sent + response.TTL
            state.pending_since = None
            state.ttl = int(response.TTL)
