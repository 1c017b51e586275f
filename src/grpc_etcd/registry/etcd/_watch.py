"""The watch stream: one ``Watch`` bidi stream per watch, re-created where it left off.

What to do with each response is the cursor's decision (``_cursor.py``); this module does the
I/O: open the stream on an endpoint the session picks, send the create request from the
cursor's next revision, read, and re-open with backoff when the stream breaks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import grpc
import grpc.aio

from grpc_etcd.backoff import Backoff

from ._cursor import Cancel, WatchCursor
from ._outcomes import Op
from ._proto import etcd_pb2 as pb
from ._session import Session
from ._transport import EOF, KV_RANGE, WATCH, Endpoint, ErrorKind, StreamCall, classify, map_error
from ._types import EtcdError, EtcdUnavailableError, KeyValue, WatchEvent, WatchResponse

__all__ = ["WatchSpec", "watch_stream"]

_log = logging.getLogger("grpc_etcd.etcd")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0


def to_kv(m: pb.KeyValue) -> KeyValue:
    """Our ``KeyValue`` of etcd's."""
    return KeyValue(
        key=m.key,
        value=m.value,
        create_revision=m.create_revision,
        mod_revision=m.mod_revision,
        version=m.version,
        lease=m.lease,
    )


def _event(e: pb.Event) -> WatchEvent:
    return WatchEvent(
        type="delete" if e.type == pb.Event.DELETE else "put",
        kv=to_kv(e.kv),
        prev_kv=to_kv(e.prev_kv) if e.HasField("prev_kv") else None,
    )


class _Reopen(Exception):
    """Re-open the stream (``immediately``: skip the backoff, after a token refresh)."""

    def __init__(self, reason: str, *, immediately: bool = False) -> None:
        super().__init__(reason)
        self.immediately = immediately


class WatchSpec:
    """What to watch: ``[key, range_end)`` (``range_end`` empty = the key alone)."""

    __slots__ = ("created_notify", "key", "prev_kv", "progress_notify", "range_end")

    def __init__(
        self,
        key: bytes,
        range_end: bytes,
        *,
        progress_notify: bool,
        prev_kv: bool,
        created_notify: bool,
    ) -> None:
        self.key = key
        self.range_end = range_end
        self.progress_notify = progress_notify
        self.prev_kv = prev_kv
        self.created_notify = created_notify


class _Attempts:
    """The state a watch keeps across streams, and one stream's reading."""

    def __init__(self, session: Session, spec: WatchSpec, start_revision: int) -> None:
        self.session = session
        self.spec = spec
        self.cursor = WatchCursor(start_revision)
        self.backoff = Backoff(BACKOFF_BASE, BACKOFF_CAP)
        self.token_refreshed = False  # one refresh per established stream
        self._first = True
        #: names the watch in the AuthError that refuses it
        self.op = Op("watch", spec.key, prefix=bool(spec.range_end))

    def _check(self, resp: pb.WatchResponse, endpoint: Endpoint) -> None:
        verdict = self.cursor.check(
            compact_revision=int(resp.compact_revision),
            canceled=resp.canceled,
            cancel_reason=resp.cancel_reason,
            endpoint=endpoint.address,
            can_refresh_token=self.session.uses_auth and not self.token_refreshed,
            op=self.op,
            user=self.session.user,
        )
        if verdict is Cancel.AUTH:
            self.session.drop_token()
            raise _Reopen(resp.cancel_reason, immediately=True)

    async def _check_rollback(self, endpoint: Endpoint) -> None:
        """A linearizable read on the member tells a lagging member from lost history."""
        resp, _ = await self.session.call(
            KV_RANGE,
            pb.RangeRequest(key=self.spec.key, limit=1, count_only=True),
            pb.RangeResponse,
            idempotent=True,
            endpoint=endpoint.address,
        )
        error = self.cursor.rolled_back(int(resp.header.revision), endpoint.address)
        if error is not None:
            raise error

    async def read(
        self, call: StreamCall, endpoint: Endpoint
    ) -> AsyncGenerator[WatchResponse, None]:
        """Create the watch on ``call`` and yield what the caller should see, until it breaks."""
        spec, cursor = self.spec, self.cursor
        create = pb.WatchCreateRequest(
            key=spec.key,
            range_end=spec.range_end,
            start_revision=cursor.next_revision,
            progress_notify=spec.progress_notify,
            prev_kv=spec.prev_kv,
        )
        await call.write(pb.WatchRequest(create_request=create))
        async with asyncio.timeout(self.session.timeout):
            created = await call.read()
        if created is EOF:
            raise _Reopen("stream ended before the watch was created")
        assert isinstance(created, pb.WatchResponse)
        self._check(created, endpoint)
        revision = int(created.header.revision)
        if cursor.rollback_suspect(revision):
            await self._check_rollback(endpoint)
        cursor.created(revision)
        self.backoff.reset()
        self.token_refreshed = False
        if self._first and spec.created_notify:
            yield WatchResponse(revision=revision, events=(), progress_notify=False, created=True)
        self._first = False
        while True:
            resp = await call.read()
            if resp is EOF:
                raise _Reopen("stream ended")
            assert isinstance(resp, pb.WatchResponse)
            self._check(resp, endpoint)
            if resp.created:
                continue
            revision = int(resp.header.revision)
            if resp.events:
                events = cursor.events(revision, [_event(e) for e in resp.events])
                if events:
                    yield WatchResponse(revision=revision, events=events, progress_notify=False)
            else:
                cursor.progress(revision)
                if spec.progress_notify:
                    yield WatchResponse(revision=revision, events=(), progress_notify=True)


async def watch_stream(
    session: Session, spec: WatchSpec, start_revision: int
) -> AsyncGenerator[WatchResponse, None]:
    """The responses of one watch, across any number of re-created streams (see
    ``AsyncEtcdClient.watch``). Ends when the session is closed."""
    loop = asyncio.get_running_loop()
    attempts = _Attempts(session, spec, start_revision)
    key = spec.key
    while not session.closed:
        immediately = False
        try:
            endpoint = await session.pick_endpoint(loop.time() + session.timeout)
        except EtcdError:
            if session.closed:
                return
            raise
        if endpoint is None:
            _log.info("watch %r: no etcd endpoint reachable; retrying", key)
        else:
            call: StreamCall | None = None
            try:
                call = await session.open_stream(
                    endpoint, WATCH, pb.WatchRequest.SerializeToString, pb.WatchResponse.FromString
                )
                async for response in attempts.read(call, endpoint):
                    yield response
                raise AssertionError("unreachable: a watch stream ends with an exception")
            except _Reopen as why:
                if why.immediately:
                    attempts.token_refreshed = True
                    immediately = True
                else:
                    _log.info("watch %r on %s: %s; re-opening", key, endpoint.address, why)
            except TimeoutError:
                session.connection_trouble()
                _log.info("watch %r on %s: no answer to create; re-opening", key, endpoint.address)
            except grpc.aio.AioRpcError as err:
                kind = classify(err)
                if (
                    kind is ErrorKind.STALE_TOKEN
                    and session.uses_auth
                    and not attempts.token_refreshed
                ):
                    session.drop_token()
                    attempts.token_refreshed = True
                    immediately = True
                elif kind in (ErrorKind.FATAL, ErrorKind.STALE_TOKEN):
                    raise map_error(
                        err, endpoint.address, op=attempts.op, user=session.user
                    ) from None
                else:
                    session.connection_trouble()
                    _log.info(
                        "watch %r on %s broke (%s: %s); re-opening",
                        key,
                        endpoint.address,
                        err.code(),
                        err.details(),
                    )
            except EtcdUnavailableError as err:  # authenticating for the stream failed
                _log.info("watch %r: %s; retrying", key, err)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the consumer's task is being cancelled
                if session.closed:
                    return  # our call was cancelled by close()
                # the call was cancelled under us otherwise: re-open
            except EtcdError:
                if session.closed:
                    return
                raise
            finally:
                if call is not None:
                    session.end_stream(call)
        if session.closed:
            return
        if not immediately:
            await asyncio.sleep(attempts.backoff.next_delay())
