"""``AsyncEtcdClient``: grpc_etcd's own small etcd v3 client, on grpc.aio.

All of the client's logic lives here; ``EtcdClient`` (``_sync.py``) drives this class on a
private event-loop thread.

Retry rules (every request has one deadline, ``timeout`` seconds from the call):

- Before each attempt the endpoint's channel must be READY (connected); if it cannot connect
  (refused, in backoff, or not within ``max(1 s, timeout / len(endpoints))``) the next endpoint
  is tried. Nothing was sent, so this holds for every request, writes included.
- A request that fails with UNAVAILABLE (or RESOURCE_EXHAUSTED "too many requests") after it was
  sent is retried on the next endpoint if it is idempotent: range, lease time-to-live, lease
  grant (a duplicate grant only leaves an unused lease that expires), lease revoke, status,
  authenticate. Writes (put, delete, txn, compact) are retried only if the error proves the
  request was never handled ("failed to connect", "etcdserver: no leader" - every request asks
  etcd to refuse at once when the member has no leader); otherwise ``EtcdUnavailableError``
  says the write may or may not have been applied.
- Passes over all endpoints repeat with a short backoff (50 ms doubling to 250 ms) until the
  deadline; then ``EtcdUnavailableError`` lists every endpoint and why it failed.
- With user/password, a missing/invalid/stale token (etcd restarted, auth revision changed)
  leads to one re-authentication and one retry of the request. After a reconnection the token
  is first checked against the member's raft index (see ``_check_token``): etcd 3.5 would make
  a request with a token from before a data wipe hang until its deadline.

Streams: all leases share one ``LeaseKeepAlive`` stream (``_keepalive.py``); each watch has its
own ``Watch`` stream, re-created from the last revision delivered + 1 when it breaks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from ._keepalive import KeepAlive, _KeepAliver
from ._proto import etcd_pb2 as pb
from ._transport import (
    AUTHENTICATE,
    EOF,
    KV_COMPACT,
    KV_DELETE_RANGE,
    KV_PUT,
    KV_RANGE,
    KV_TXN,
    LEASE_GRANT,
    LEASE_REVOKE,
    LEASE_TIME_TO_LIVE,
    REQUIRE_LEADER,
    STATUS,
    WATCH,
    Endpoint,
    ErrorKind,
    StreamCall,
    channel_credentials,
    classify,
    map_error,
    never_sent,
    parse_endpoints,
)
from ._types import (
    AuthError,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    KeyValue,
    Lease,
    Status,
    TLSConfig,
    WatchEvent,
    WatchResponse,
)

__all__ = ["AsyncEtcdClient", "prefix_range_end"]

_log = logging.getLogger("grpc_etcd.etcd")

R = TypeVar("R")

Key = str | bytes

WATCH_BACKOFF_INITIAL = 0.1
WATCH_BACKOFF_MAX = 2.0
CALL_BACKOFF_INITIAL = 0.05
CALL_BACKOFF_MAX = 0.25


def _b(value: Key) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key starting with ``prefix``
    (etcd's convention; ``b"\\0"`` = up to the end of the key space)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _prefix_range(prefix: Key) -> tuple[bytes, bytes]:
    key = _b(prefix)
    if not key:
        return b"\0", b"\0"  # every key
    return key, prefix_range_end(key)


def _kv(m: pb.KeyValue) -> KeyValue:
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
        kv=_kv(e.kv),
        prev_kv=_kv(e.prev_kv) if e.HasField("prev_kv") else None,
    )


class _Reopen(Exception):
    """Internal: re-open the watch stream (``immediately`` skips the backoff)."""

    def __init__(self, reason: str, *, immediately: bool = False) -> None:
        super().__init__(reason)
        self.immediately = immediately


class AsyncEtcdClient:
    """A small etcd v3 client on grpc.aio (see the module docstring for the retry rules).

    ``endpoints``: ``"host:port"`` strings, a sequence or one comma-separated string;
    ``http://`` / ``https://`` prefixes are tolerated (``https://`` turns TLS on with the system's
    roots unless ``tls`` says otherwise). ``username``/``password``: etcd auth. ``timeout``: the
    default deadline of each request, in seconds (each method also takes ``timeout=``).

    Keys and values may be ``str`` (UTF-8) or ``bytes``; what comes back is always ``bytes``.
    Channels are created on first use, on the running event loop: use one client from one event
    loop only. Close it (``await client.close()`` or ``async with``) to stop its keep-alives and
    close its channels.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 5.0,
    ) -> None:
        addresses, https = parse_endpoints(endpoints)
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if tls is None and https:
            tls = TLSConfig()
        credentials = channel_credentials(tls) if tls is not None else None
        self.endpoints: tuple[str, ...] = addresses
        self.tls = tls
        self._timeout = float(timeout)
        self._username = username
        self._password = password
        self._endpoints = [
            Endpoint(a, credentials, tls.server_name if tls else None) for a in addresses
        ]
        self._preferred = 0
        self._token: str | None = None
        self._token_suspect = False  # see _check_token
        self._auth_disabled = False  # credentials given, but etcd has auth off
        self._auth_lock = asyncio.Lock()
        self._keepaliver = _KeepAliver(self)
        self._calls: set[StreamCall] = set()
        self._closed = False

    # ------------------------------------------------------------------ properties

    @property
    def timeout(self) -> float:
        """Default deadline of a request, in seconds."""
        return self._timeout

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def current_endpoint(self) -> str:
        """The endpoint requests try first (the one that answered last)."""
        return self._endpoints[self._preferred].address

    def __repr__(self) -> str:
        return f"<AsyncEtcdClient {','.join(self.endpoints)}{' closed' if self._closed else ''}>"

    # ------------------------------------------------------------------ KV

    async def get(
        self,
        key: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> KeyValue | None:
        """The key, or ``None`` if it does not exist (linearizable read)."""
        resp = await self._call(
            KV_RANGE,
            pb.RangeRequest(key=_b(key)),
            pb.RangeResponse,
            idempotent=True,
            timeout=timeout,
        )
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(
        self,
        prefix: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` (sorted by key), and the store revision of the
        read: watch from that revision + 1 to miss nothing."""
        key, end = _prefix_range(prefix)
        resp = await self._call(
            KV_RANGE,
            pb.RangeRequest(key=key, range_end=end),
            pb.RangeResponse,
            idempotent=True,
            timeout=timeout,
        )
        return [_kv(m) for m in resp.kvs], resp.header.revision

    async def put(
        self,
        key: Key,
        value: Key,
        *,
        lease: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Write the key; return the revision of the write."""
        resp = await self._call(
            KV_PUT,
            pb.PutRequest(key=_b(key), value=_b(value), lease=int(lease)),
            pb.PutResponse,
            idempotent=False,
            timeout=timeout,
            lease_id=int(lease),
        )
        return resp.header.revision

    async def put_if_absent(
        self,
        key: Key,
        value: Key,
        *,
        lease: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> bool:
        """Write the key only if it does not exist (one txn); True if written."""
        k = _b(key)
        request = pb.TxnRequest(
            compare=[
                pb.Compare(
                    result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=k, create_revision=0
                )
            ],
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=k, value=_b(value), lease=int(lease)))
            ],
        )
        resp = await self._call(
            KV_TXN,
            request,
            pb.TxnResponse,
            idempotent=False,
            timeout=timeout,
            lease_id=int(lease),
        )
        return bool(resp.succeeded)

    async def delete(
        self,
        key: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Delete the key; return how many keys were deleted (0 or 1)."""
        resp = await self._call(
            KV_DELETE_RANGE,
            pb.DeleteRangeRequest(key=_b(key)),
            pb.DeleteRangeResponse,
            idempotent=False,
            timeout=timeout,
        )
        return int(resp.deleted)

    async def delete_prefix(
        self,
        prefix: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Delete every key starting with ``prefix``; return how many were deleted."""
        key, end = _prefix_range(prefix)
        resp = await self._call(
            KV_DELETE_RANGE,
            pb.DeleteRangeRequest(key=key, range_end=end),
            pb.DeleteRangeResponse,
            idempotent=False,
            timeout=timeout,
        )
        return int(resp.deleted)

    async def compact(
        self,
        revision: int,
        *,
        physical: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Drop the history before ``revision``. Compacting at or below an earlier compaction
        raises ``CompactedError`` (``compact_revision`` 0); a future revision ``EtcdError``."""
        await self._call(
            KV_COMPACT,
            pb.CompactionRequest(revision=revision, physical=physical),
            pb.CompactionResponse,
            idempotent=False,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ leases

    async def lease_grant(
        self,
        ttl: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> Lease:
        """Grant a lease; return it as a ``Lease`` (an ``int``, the lease id, with ``.ttl``,
        the TTL etcd granted - etcd raises a too-small TTL to its minimum)."""
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        resp = await self._call(
            LEASE_GRANT,
            pb.LeaseGrantRequest(TTL=int(ttl)),
            pb.LeaseGrantResponse,
            idempotent=True,
            timeout=timeout,
        )
        if resp.error:
            raise EtcdError(f"lease grant failed: {resp.error}", endpoints=self.endpoints)
        return Lease(resp.ID, int(resp.TTL))

    async def lease_revoke(
        self,
        lease_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Revoke the lease (its keys are deleted). ``LeaseNotFoundError`` if it does not exist."""
        await self._call(
            LEASE_REVOKE,
            pb.LeaseRevokeRequest(ID=int(lease_id)),
            pb.LeaseRevokeResponse,
            idempotent=True,
            timeout=timeout,
            lease_id=int(lease_id),
            not_found_ok_on_retry=True,
        )

    async def lease_time_to_live(
        self,
        lease_id: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Whole seconds the lease has left (rounded down: 0 = under a second); -1 if it
        expired or does not exist."""
        resp = await self._call(
            LEASE_TIME_TO_LIVE,
            pb.LeaseTimeToLiveRequest(ID=int(lease_id)),
            pb.LeaseTimeToLiveResponse,
            idempotent=True,
            timeout=timeout,
            lease_id=int(lease_id),
        )
        return int(resp.TTL) if resp.TTL >= 0 else -1

    def keep_alive(
        self, lease_id: int, ttl: int, on_lost: Callable[[int], None] | None = None
    ) -> KeepAlive:
        """Keep the lease alive until ``stop()``/``cancel()`` on the handle or ``close()``.

        All leases of the client share one ``LeaseKeepAlive`` stream. A request goes out about
        every ``ttl / 3`` s. When the lease is gone (etcd answers TTL <= 0, or nothing confirms
        it for ``ttl`` seconds) the handle's ``lost`` becomes True and ``on_lost(lease_id)`` is
        called once, on this event loop (it must not block). Must be called on the loop.
        """
        self._check_open()
        return self._keepaliver.add(int(lease_id), int(ttl), on_lost)

    # ------------------------------------------------------------------ watch

    def watch(
        self,
        key: Key,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        progress_notify: bool = False,
        prev_kv: bool = False,
    ) -> AsyncGenerator[WatchResponse, None]:
        """Watch a key (or every key under ``prefix=True``) from ``start_revision`` (inclusive;
        0 = from when the watch is created: pass a read's revision + 1 to miss nothing).

        Yields one ``WatchResponse`` per batch of events; progress notifications only with
        ``progress_notify=True`` (etcd sends them every ``--experimental-watch-progress-notify-
        interval``, 10 min by default). If the stream breaks, the watch is re-created from the
        last revision delivered + 1 (with backoff, on any endpoint), so no event is lost or
        repeated. Raises ``CompactedError`` when the revision it needs was compacted (or etcd's
        history went backwards), ``AuthError`` on permission problems. Ends when the client is
        closed. ``aclose()`` (or ``contextlib.aclosing``) cancels the watch on the server.
        """
        self._check_open()
        if prefix:
            k, end = _prefix_range(key)
        else:
            k, end = _b(key), b""
        return self._watch(k, end, max(0, int(start_revision)), progress_notify, prev_kv)

    async def _watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        progress_notify: bool,
        prev_kv: bool,
    ) -> AsyncGenerator[WatchResponse, None]:
        loop = asyncio.get_running_loop()
        next_rev = start_revision  # next revision the caller needs; 0 = "now" (not yet known)
        seen_rev = 0  # highest store revision seen from etcd
        delay = WATCH_BACKOFF_INITIAL
        token_refreshed = False
        while not self._closed:
            immediately = False
            until = loop.time() + self._timeout
            try:
                endpoint = await self._pick_endpoint(until)
            except EtcdError:
                if self._closed:
                    return
                raise
            if endpoint is None:
                _log.info("watch %r: no etcd endpoint reachable; retrying", key)
            else:
                call: StreamCall | None = None
                try:
                    metadata = await self._stream_metadata(endpoint, until)
                    call = endpoint.stream(
                        WATCH, pb.WatchRequest.SerializeToString, pb.WatchResponse.FromString
                    )(None, metadata=metadata)
                    self._calls.add(call)
                    create = pb.WatchCreateRequest(
                        key=key,
                        range_end=range_end,
                        start_revision=next_rev,
                        progress_notify=progress_notify,
                        prev_kv=prev_kv,
                    )
                    await call.write(pb.WatchRequest(create_request=create))
                    async with asyncio.timeout(self._timeout):
                        created = await call.read()
                    if created is EOF:
                        raise _Reopen("stream ended before the watch was created")
                    assert isinstance(created, pb.WatchResponse)
                    self._check_watch_response(created, endpoint, next_rev, token_refreshed)
                    rev = created.header.revision
                    if seen_rev and rev < seen_rev:
                        await self._check_rollback(endpoint, key, seen_rev)
                    if next_rev == 0:
                        next_rev = rev + 1
                    seen_rev = max(seen_rev, rev)
                    delay = WATCH_BACKOFF_INITIAL
                    token_refreshed = False
                    while True:
                        resp = await call.read()
                        if resp is EOF:
                            raise _Reopen("stream ended")
                        assert isinstance(resp, pb.WatchResponse)
                        self._check_watch_response(resp, endpoint, next_rev, token_refreshed)
                        if resp.created:
                            continue
                        rev = resp.header.revision
                        if resp.events:
                            events = tuple(
                                _event(e) for e in resp.events if e.kv.mod_revision >= next_rev
                            )
                            if not events:
                                continue
                            next_rev = events[-1].kv.mod_revision + 1
                            seen_rev = max(seen_rev, rev, next_rev - 1)
                            yield WatchResponse(revision=rev, events=events, progress_notify=False)
                        else:
                            # progress notification: sent only to a watcher that has caught up,
                            # so nothing at or below rev is still to come
                            next_rev = max(next_rev, rev + 1)
                            seen_rev = max(seen_rev, rev)
                            if progress_notify:
                                yield WatchResponse(revision=rev, events=(), progress_notify=True)
                except _Reopen as why:
                    if why.immediately:
                        token_refreshed = True
                        immediately = True
                    else:
                        _log.info("watch %r on %s: %s; re-opening", key, endpoint.address, why)
                except TimeoutError:
                    self._connection_trouble()
                    _log.info(
                        "watch %r on %s: no answer to create; re-opening", key, endpoint.address
                    )
                except grpc.aio.AioRpcError as err:
                    kind = classify(err)
                    if kind is ErrorKind.STALE_TOKEN and self._username and not token_refreshed:
                        self._drop_token()
                        token_refreshed = True
                        immediately = True
                    elif kind in (ErrorKind.FATAL, ErrorKind.STALE_TOKEN):
                        raise map_error(err, endpoint.address) from None
                    else:
                        self._connection_trouble()
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
                    if self._closed:
                        return  # our call was cancelled by close()
                    # the call was cancelled under us otherwise: re-open
                except EtcdError:
                    if self._closed:
                        return
                    raise
                finally:
                    if call is not None:
                        self._calls.discard(call)
                        call.cancel()
            if self._closed:
                return
            if not immediately:
                await asyncio.sleep(delay)
                delay = min(delay * 2, WATCH_BACKOFF_MAX)

    def _check_watch_response(
        self, resp: pb.WatchResponse, endpoint: Endpoint, next_rev: int, token_refreshed: bool
    ) -> None:
        if resp.compact_revision > 0:
            raise CompactedError(
                f"watch from revision {next_rev} needs history that was compacted "
                f"(oldest revision left: {resp.compact_revision})",
                compact_revision=int(resp.compact_revision),
                endpoints=(endpoint.address,),
            )
        if not resp.canceled:
            return
        reason = resp.cancel_reason or "no reason given"
        lowered = reason.lower()
        auth_related = any(
            m in lowered
            for m in (
                "permission denied",
                "invalid auth token",
                "user name is empty",
                "auth store is old",
            )
        )
        if auth_related and self._username and not token_refreshed:
            # etcd 3.5.1 answers "permission denied" for a stale token too: refresh it once
            self._drop_token()
            raise _Reopen(reason, immediately=True)
        if auth_related:
            raise AuthError(f"watch refused: {reason}", endpoints=(endpoint.address,))
        raise EtcdError(f"watch canceled by etcd: {reason}", endpoints=(endpoint.address,))

    async def _check_rollback(self, endpoint: Endpoint, key: bytes, seen_rev: int) -> None:
        """A re-created watch reports an older revision than we saw: a lagging member, or
        etcd's history went back (restarted with its data wiped). A linearizable read on that
        member tells which."""
        resp = await self._call(
            KV_RANGE,
            pb.RangeRequest(key=key, limit=1, count_only=True),
            pb.RangeResponse,
            idempotent=True,
            endpoint=endpoint.address,
        )
        current = int(resp.header.revision)
        if current < seen_rev:
            raise CompactedError(
                f"etcd's revision went back from {seen_rev} to {current} "
                "(data lost or wiped?): the history this watch needs is gone; read again",
                compact_revision=current,
                endpoints=(endpoint.address,),
            )

    # ------------------------------------------------------------------ maintenance

    async def status(
        self,
        *,
        endpoint: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> Status:
        """``Maintenance.Status`` of the first member that answers, or of ``endpoint`` (one of
        ``endpoints``, no failover)."""
        resp, address = await self._call_at(
            STATUS,
            pb.StatusRequest(),
            pb.StatusResponse,
            idempotent=True,
            timeout=timeout,
            endpoint=endpoint,
        )
        return Status(
            leader=int(resp.leader),
            member_id=int(resp.header.member_id),
            revision=int(resp.header.revision),
            raft_term=int(resp.raftTerm),
            version=resp.version,
            endpoint=address,
        )

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop every keep-alive (without revoking: that is the caller's job), end every watch
        and close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._keepaliver.close()
        for call in list(self._calls):
            call.cancel()
        await asyncio.sleep(0)  # let watch generators see their cancelled calls
        for endpoint in self._endpoints:
            await endpoint.close()

    async def __aenter__(self) -> AsyncEtcdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EtcdError("client is closed", endpoints=self.endpoints)

    def _order(self) -> list[Endpoint]:
        n = len(self._endpoints)
        return [self._endpoints[(self._preferred + i) % n] for i in range(n)]

    def _connect_budget(self) -> float:
        return max(1.0, self._timeout / len(self._endpoints))

    def _endpoint(self, address: str) -> Endpoint:
        for ep in self._endpoints:
            if ep.address == address:
                return ep
        wanted, _ = parse_endpoints(address)
        for ep in self._endpoints:
            if ep.address == wanted[0]:
                return ep
        raise ValueError(f"{address!r} is not one of this client's endpoints {self.endpoints}")

    async def _pick_endpoint(self, until: float) -> Endpoint | None:
        """The first endpoint (preferred first) whose channel is READY, or None."""
        if self._closed:
            raise EtcdError("client is closed", endpoints=self.endpoints)
        loop = asyncio.get_running_loop()
        for ep in self._order():
            if loop.time() >= until:
                break
            if await ep.ready(min(until, loop.time() + self._connect_budget())):
                self._preferred = self._endpoints.index(ep)
                return ep
        return None

    def _drop_token(
        self, token: str | None = None, why: str = "etcd rejected the auth token"
    ) -> None:
        """Forget the auth token (``token``: only if it is still the current one)."""
        if self._username is not None and (token is None or self._token == token):
            if self._token is not None:
                _log.info("%s; authenticating again", why)
            self._token = None
        self._auth_disabled = False

    def _connection_trouble(self) -> None:
        """A connection broke: etcd may have restarted, so check the token before using it."""
        if self._token is not None:
            self._token_suspect = True

    async def _get_token(self, until: float, endpoint: Endpoint | None = None) -> str | None:
        """The auth token to send (authenticating first if needed); None without auth."""
        if self._username is None or self._password is None:
            return None
        if endpoint is not None and endpoint.reconnected:
            endpoint.reconnected = False
            self._connection_trouble()
        if self._token is not None and self._token_suspect and endpoint is not None:
            await self._check_token(self._token, endpoint, until)
        if self._token is not None or self._auth_disabled:
            return self._token
        async with self._auth_lock:
            if self._token is None and not self._auth_disabled:
                loop = asyncio.get_running_loop()
                try:
                    resp = await self._call(
                        AUTHENTICATE,
                        pb.AuthenticateRequest(name=self._username, password=self._password),
                        pb.AuthenticateResponse,
                        idempotent=True,
                        timeout=max(until - loop.time(), 0.001),
                        with_token=False,
                    )
                except EtcdError as err:
                    if err.code == "FAILED_PRECONDITION" and "not enabled" in str(err):
                        self._auth_disabled = True
                        return None
                    raise
                self._token = resp.token or None
                self._token_suspect = False
            return self._token

    async def _check_token(self, token: str, endpoint: Endpoint, until: float) -> None:
        """Drop a simple token that comes from another history of the cluster.

        etcd's simple tokens look like ``<random>.<raft index>``, and etcd makes every request
        carrying one wait until the member has applied that raft index. After etcd restarted
        with its data wiped, an old token's index may lie far in the new cluster's future, so
        each request would hang until its deadline instead of failing with "invalid auth
        token". ``Status`` (no auth needed) tells the member's raft index: a token beyond it
        is dropped, and a new one fetched.
        """
        self._token_suspect = False
        _, dot, index_text = token.rpartition(".")
        if not dot or not index_text.isdigit() or token.count(".") != 1:
            return  # a JWT, or something else that does not wait
        loop = asyncio.get_running_loop()
        status = endpoint.unary(
            STATUS, pb.StatusRequest.SerializeToString, pb.StatusResponse.FromString
        )
        try:
            resp: pb.StatusResponse = await status(
                pb.StatusRequest(), timeout=max(min(until - loop.time(), 2.0), 0.001)
            )
        except grpc.aio.AioRpcError:
            self._token_suspect = True  # cannot tell now; ask again next time
            return
        if int(index_text) > max(resp.raftIndex, resp.raftAppliedIndex):
            self._drop_token(token, "the auth token is from before an etcd reset")

    async def _stream_metadata(self, endpoint: Endpoint, until: float) -> list[tuple[str, str]]:
        token = await self._get_token(until, endpoint)
        return [REQUIRE_LEADER, ("token", token)] if token else [REQUIRE_LEADER]

    async def _call(
        self,
        path: str,
        request: Any,
        response_type: type[R],
        *,
        idempotent: bool,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        endpoint: str | None = None,
        with_token: bool = True,
        lease_id: int = 0,
        not_found_ok_on_retry: bool = False,
    ) -> R:
        """One unary request with failover, retries, re-authentication; see the module doc."""
        response, _ = await self._call_at(
            path,
            request,
            response_type,
            idempotent=idempotent,
            timeout=timeout,
            endpoint=endpoint,
            with_token=with_token,
            lease_id=lease_id,
            not_found_ok_on_retry=not_found_ok_on_retry,
        )
        return response

    async def _call_at(
        self,
        path: str,
        request: Any,
        response_type: type[R],
        *,
        idempotent: bool,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        endpoint: str | None = None,
        with_token: bool = True,
        lease_id: int = 0,
        not_found_ok_on_retry: bool = False,
    ) -> tuple[R, str]:
        """``_call``, also returning the endpoint that answered."""
        self._check_open()
        loop = asyncio.get_running_loop()
        until = loop.time() + (self._timeout if timeout is None else timeout)
        endpoints = [self._endpoint(endpoint)] if endpoint is not None else self._order()
        deserializer: Callable[[bytes], R] = response_type.FromString  # type: ignore[attr-defined]
        failures: dict[str, str] = {}
        token_refreshed = False
        maybe_applied = False
        delay = CALL_BACKOFF_INITIAL
        while True:
            for ep in endpoints:
                while loop.time() < until:  # loops again only after a token refresh
                    if not await ep.ready(min(until, loop.time() + self._connect_budget())):
                        failures[ep.address] = "cannot connect"
                        break
                    token = await self._get_token(until, ep) if with_token else None
                    metadata = [REQUIRE_LEADER, ("token", token)] if token else [REQUIRE_LEADER]
                    multicallable = ep.unary(path, type(request).SerializeToString, deserializer)
                    try:
                        response: R = await multicallable(
                            request, timeout=max(until - loop.time(), 0.001), metadata=metadata
                        )
                    except grpc.aio.AioRpcError as err:
                        kind = classify(err)
                        if (
                            kind is ErrorKind.STALE_TOKEN
                            and with_token
                            and self._username is not None
                            and not token_refreshed
                        ):
                            token_refreshed = True
                            self._drop_token(token)
                            continue  # authenticate again, same endpoint
                        if kind in (ErrorKind.FATAL, ErrorKind.STALE_TOKEN):
                            if (
                                not_found_ok_on_retry
                                and maybe_applied
                                and err.code() == grpc.StatusCode.NOT_FOUND
                            ):
                                return response_type(), ep.address
                            raise map_error(err, ep.address, lease_id=lease_id) from None
                        self._connection_trouble()
                        sent = not never_sent(err)
                        name = err.code().name if err.code() is not None else "UNKNOWN"
                        if sent and not idempotent:
                            raise EtcdUnavailableError(
                                f"{name}: {err.details()}; the write may or may not have "
                                "been applied",
                                endpoints=(ep.address,),
                                code=name,
                            ) from None
                        maybe_applied = maybe_applied or sent
                        failures[ep.address] = f"{name}: {err.details()}"
                        break
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self._closed and task is not None and not task.cancelling():
                            raise EtcdError(
                                "client closed during the request", endpoints=(ep.address,)
                            ) from None
                        raise
                    if endpoint is None:
                        self._preferred = self._endpoints.index(ep)
                    return response, ep.address
                if self._closed:
                    raise EtcdError("client is closed", endpoints=self.endpoints)
            remaining = until - loop.time()
            if remaining <= 0:
                total = self._timeout if timeout is None else timeout
                why = "; ".join(f"{a}: {w}" for a, w in failures.items()) or "no time left"
                raise EtcdUnavailableError(
                    f"no etcd endpoint answered within {total:g} s ({why})",
                    endpoints=[ep.address for ep in endpoints],
                    code="UNAVAILABLE",
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, CALL_BACKOFF_MAX)
