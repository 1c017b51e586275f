"""``Session``: the endpoints of one etcd client, its auth token and the retry rules.

Every request of ``AsyncEtcdClient`` and every stream (watch, lease keep-alive) goes through
one session. Retry rules (every request has one deadline, ``timeout`` seconds from the call):

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
- Passes over all endpoints repeat with a short backoff (``backoff.Backoff``, 50 ms growing to
  250 ms) until the deadline; then ``EtcdUnavailableError`` lists every endpoint and why it failed.
- With user/password, a missing/invalid/stale token (etcd restarted, auth revision changed)
  leads to one re-authentication and one retry of the request. After a reconnection the token
  is first checked against the member's raft index (see ``_check_token``): etcd 3.5 would make
  a request with a token from before a data wipe hang until its deadline.

These decisions are pure and written once, in ``_outcomes.Attempts``; ``Session.call`` only
waits, sends and sleeps as it says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from ._outcomes import Attempts, Op, Step
from ._proto import etcd_pb2 as pb
from ._transport import (
    AUTHENTICATE,
    REQUIRE_LEADER,
    STATUS,
    Endpoint,
    StreamCall,
    channel_credentials,
    parse_endpoints,
    status_name,
)
from ._types import EtcdClientClosedError, EtcdError, TLSConfig

__all__ = ["Session"]

_log = logging.getLogger("grpc_etcd.etcd")

R = TypeVar("R")

Metadata = list[tuple[str, str]]


class Session:
    """Endpoint failover, the auth token and the request retries of one etcd client.

    ``endpoints``, ``username``/``password``, ``tls`` and ``timeout`` as for
    ``AsyncEtcdClient``. Channels are created on first use, on the running event loop.
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
        self.addresses: tuple[str, ...] = addresses
        self.tls = tls
        self.timeout = float(timeout)
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
        self._streams: set[StreamCall] = set()
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def uses_auth(self) -> bool:
        """True when the session authenticates (user name and password given)."""
        return self._username is not None

    @property
    def user(self) -> str | None:
        """The etcd user name the session authenticates as (None without auth)."""
        return self._username

    @property
    def token(self) -> str | None:
        """The auth token in use (None before authenticating or without auth)."""
        return self._token

    @property
    def open_streams(self) -> frozenset[StreamCall]:
        """The streams opened with :meth:`open_stream` and not yet finished."""
        return frozenset(self._streams)

    @property
    def current_endpoint(self) -> str:
        """The endpoint requests try first (the one that answered last)."""
        return self._endpoints[self._preferred].address

    def check_open(self) -> None:
        """Raise ``EtcdClientClosedError`` once the session is closed."""
        if self._closed:
            raise EtcdClientClosedError(endpoints=self.addresses)

    # ------------------------------------------------------------------ endpoints

    def _order(self) -> list[Endpoint]:
        n = len(self._endpoints)
        return [self._endpoints[(self._preferred + i) % n] for i in range(n)]

    def _connect_budget(self) -> float:
        return max(1.0, self.timeout / len(self._endpoints))

    def _endpoint(self, address: str) -> Endpoint:
        for ep in self._endpoints:
            if ep.address == address:
                return ep
        wanted, _ = parse_endpoints(address)
        for ep in self._endpoints:
            if ep.address == wanted[0]:
                return ep
        raise ValueError(f"{address!r} is not one of this client's endpoints {self.addresses}")

    async def pick_endpoint(self, until: float) -> Endpoint | None:
        """The first endpoint (preferred first) whose channel is READY by loop time ``until``,
        or None."""
        self.check_open()
        loop = asyncio.get_running_loop()
        for ep in self._order():
            if loop.time() >= until:
                break
            if await ep.ready(min(until, loop.time() + self._connect_budget())):
                self._preferred = self._endpoints.index(ep)
                return ep
        return None

    # ------------------------------------------------------------------ auth token

    def drop_token(
        self, token: str | None = None, why: str = "etcd rejected the auth token"
    ) -> None:
        """Forget the auth token (``token``: only if it is still the current one)."""
        if self._username is not None and (token is None or self._token == token):
            if self._token is not None:
                _log.info("%s; authenticating again", why)
            self._token = None
        self._auth_disabled = False

    def connection_trouble(self) -> None:
        """A connection broke: etcd may have restarted, so check the token before using it."""
        if self._token is not None:
            self._token_suspect = True

    async def _get_token(self, until: float, endpoint: Endpoint | None = None) -> str | None:
        """The auth token to send (authenticating first if needed); None without auth."""
        if self._username is None or self._password is None:
            return None
        if endpoint is not None and endpoint.reconnected:
            endpoint.reconnected = False
            self.connection_trouble()
        if self._token is not None and self._token_suspect and endpoint is not None:
            await self._check_token(self._token, endpoint, until)
        if self._token is not None or self._auth_disabled:
            return self._token
        async with self._auth_lock:
            if self._token is None and not self._auth_disabled:
                loop = asyncio.get_running_loop()
                try:
                    resp, _ = await self.call(
                        AUTHENTICATE,
                        pb.AuthenticateRequest(name=self._username, password=self._password),
                        pb.AuthenticateResponse,
                        idempotent=True,
                        timeout=max(until - loop.time(), 0.001),
                        with_token=False,
                        op=Op(f"authenticate as user {self._username}"),
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
            self.drop_token(token, "the auth token is from before an etcd reset")

    async def _metadata(self, endpoint: Endpoint, until: float, with_token: bool) -> Metadata:
        token = await self._get_token(until, endpoint) if with_token else None
        return [REQUIRE_LEADER, ("token", token)] if token else [REQUIRE_LEADER]

    # ------------------------------------------------------------------ streams

    async def open_stream(
        self,
        endpoint: Endpoint,
        path: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
    ) -> StreamCall:
        """A new bidi stream on ``endpoint`` (with the token); cancelled by :meth:`close`.
        Pass it to :meth:`end_stream` when done."""
        metadata = await self._metadata(
            endpoint, asyncio.get_running_loop().time() + self.timeout, True
        )
        self.check_open()
        call = endpoint.stream(path, serializer, deserializer)(None, metadata=metadata)
        self._streams.add(call)
        return call

    def end_stream(self, call: StreamCall) -> None:
        """Cancel a stream from :meth:`open_stream` (idempotent)."""
        self._streams.discard(call)
        call.cancel()

    # ------------------------------------------------------------------ requests

    async def call(
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
        op: Op | None = None,
    ) -> tuple[R, str]:
        """One unary request with failover, retries and re-authentication (see the module
        doc); returns the response and the endpoint that answered. ``endpoint``: only that
        one, no failover. ``not_found_ok_on_retry``: a NOT_FOUND after an attempt that may
        have been applied counts as success (revoking a lease twice). ``op``: what the
        request does, named by the ``AuthError`` that refuses it.

        What to do after each failure is :class:`Attempts`' decision; this does the I/O."""
        self.check_open()
        loop = asyncio.get_running_loop()
        total = self.timeout if timeout is None else timeout
        until = loop.time() + total
        endpoints = [self._endpoint(endpoint)] if endpoint is not None else self._order()
        deserializer: Callable[[bytes], R] = response_type.FromString  # type: ignore[attr-defined]
        attempts = Attempts(
            idempotent=idempotent,
            can_reauthenticate=with_token and self._username is not None,
            not_found_ok_on_retry=not_found_ok_on_retry,
            lease_id=lease_id,
            op=op,
            user=self._username,
        )
        while True:
            for ep in endpoints:
                while loop.time() < until:  # loops again only after a token refresh
                    if not await ep.ready(min(until, loop.time() + self._connect_budget())):
                        attempts.cannot_connect(ep.address)
                        break
                    metadata = await self._metadata(ep, until, with_token)
                    token = self._token if with_token else None
                    multicallable = ep.unary(path, type(request).SerializeToString, deserializer)
                    try:
                        response: R = await multicallable(
                            request, timeout=max(until - loop.time(), 0.001), metadata=metadata
                        )
                    except grpc.aio.AioRpcError as err:
                        decision = attempts.failed(
                            status_name(err), err.details() or "", ep.address
                        )
                        if decision.suspect_connection:
                            self.connection_trouble()
                        if decision.step is Step.REAUTHENTICATE:
                            self.drop_token(token)
                            continue
                        if decision.step is Step.DONE:
                            return response_type(), ep.address
                        if decision.error is not None:
                            raise decision.error from None
                        break  # Step.NEXT_ENDPOINT
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self._closed and task is not None and not task.cancelling():
                            raise EtcdClientClosedError(
                                "during the request", endpoints=(ep.address,)
                            ) from None
                        raise
                    if endpoint is None:
                        self._preferred = self._endpoints.index(ep)
                    return response, ep.address
                self.check_open()
            addresses = [ep.address for ep in endpoints]
            await asyncio.sleep(attempts.pause(until - loop.time(), total, addresses))

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Cancel every open stream and close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for call in list(self._streams):
            call.cancel()
        await asyncio.sleep(0)  # let stream readers see their cancelled calls
        for endpoint in self._endpoints:
            await endpoint.close()
