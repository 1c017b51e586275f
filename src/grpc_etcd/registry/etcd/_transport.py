"""Endpoints, channels, error mapping: the gRPC plumbing under AsyncEtcdClient.

One ``grpc.aio`` channel per endpoint (not one channel over a static address list), because the
client must know *which* endpoint a call went to and steer the next attempt itself:

- errors name the endpoint; failover order is explicit (start at the endpoint that last worked,
  then the others in the given order) and does not depend on a gRPC LB policy;
- it can tell "never connected" (safe to retry anything elsewhere) from "failed after sending"
  (retry only idempotent requests) by checking the channel state before each attempt;
- long-lived streams (watch, lease keep-alive) can be re-opened on a *different* member when the
  one they were on goes away, instead of waiting for gRPC to reconnect to the same one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from ._endpoints import parse_endpoints
from ._outcomes import ErrorKind, Op, classify_status, error_for, not_sent
from ._types import EtcdClientClosedError, EtcdError, TLSConfig

__all__ = [
    "EOF",
    "Endpoint",
    "ErrorKind",
    "classify",
    "map_error",
    "never_sent",
    "parse_endpoints",
    "status_name",
]

#: what ``StreamStreamCall.read()`` returns at the end of the stream (missing from grpc-stubs)
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

UnaryCallable = grpc.aio.UnaryUnaryMultiCallable[Any, Any]
StreamCallable = grpc.aio.StreamStreamMultiCallable[Any, Any]
StreamCall = grpc.aio.StreamStreamCall[Any, Any]

# etcd's real gRPC method paths (the proto package of our messages is private, the paths are not)
KV_RANGE = "/etcdserverpb.KV/Range"
KV_PUT = "/etcdserverpb.KV/Put"
KV_DELETE_RANGE = "/etcdserverpb.KV/DeleteRange"
KV_TXN = "/etcdserverpb.KV/Txn"
KV_COMPACT = "/etcdserverpb.KV/Compact"
LEASE_GRANT = "/etcdserverpb.Lease/LeaseGrant"
LEASE_REVOKE = "/etcdserverpb.Lease/LeaseRevoke"
LEASE_KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
LEASE_TIME_TO_LIVE = "/etcdserverpb.Lease/LeaseTimeToLive"
WATCH = "/etcdserverpb.Watch/Watch"
AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
AUTH_STATUS = "/etcdserverpb.Auth/AuthStatus"
USER_GET = "/etcdserverpb.Auth/UserGet"
USER_LIST = "/etcdserverpb.Auth/UserList"
USER_GRANT_ROLE = "/etcdserverpb.Auth/UserGrantRole"
USER_REVOKE_ROLE = "/etcdserverpb.Auth/UserRevokeRole"
ROLE_ADD = "/etcdserverpb.Auth/RoleAdd"
ROLE_GET = "/etcdserverpb.Auth/RoleGet"
ROLE_GRANT_PERMISSION = "/etcdserverpb.Auth/RoleGrantPermission"
ROLE_REVOKE_PERMISSION = "/etcdserverpb.Auth/RoleRevokePermission"
STATUS = "/etcdserverpb.Maintenance/Status"

# Sent with every request: a member that has no leader refuses the request at once with
# "etcdserver: no leader" (UNAVAILABLE) *before* handling it, instead of hanging until its
# request timeout; so the client fails over quickly and may retry even writes. On streams it
# also makes etcd close watch/keep-alive streams of a member that lost its leader.
REQUIRE_LEADER = ("hasleader", "true")

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # etcd answers big ranges in one message; its server-side limit is 2 GiB as well
    ("grpc.max_receive_message_length", -1),
    # find dead connections under long-lived streams; etcd's default enforcement policy allows
    # pings every 5 s, and only while a stream is open
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # after an etcd restart, reconnect within about a second (gRPC's default backoff reaches 2 min)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.primary_user_agent", "grpc-etcd"),
]


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """gRPC's credentials for ``tls``'s PEM files (the CA, and a client pair for mutual TLS)."""
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ValueError("TLSConfig: cert_file and key_file go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file),
        certificate_chain=_read(tls.cert_file),
    )


class Endpoint:
    """One etcd member address and its (lazily created, loop-bound) channel."""

    def __init__(
        self, address: str, credentials: grpc.ChannelCredentials | None, server_name: str | None
    ) -> None:
        self.address = address
        self._credentials = credentials
        self._server_name = server_name
        self._channel: grpc.aio.Channel | None = None
        self._unary: dict[str, UnaryCallable] = {}
        self._stream: dict[str, StreamCallable] = {}
        self._closed = False
        #: set when ``ready()`` (re)connected the channel; the client reads and clears it
        self.reconnected = False

    @property
    def channel(self) -> grpc.aio.Channel:
        """The endpoint's channel, created on first use (``EtcdClientClosedError`` once closed)."""
        if self._closed:
            raise EtcdClientClosedError(endpoints=(self.address,))
        if self._channel is None:
            options = list(CHANNEL_OPTIONS)
            if self._credentials is not None:
                if self._server_name:
                    options.append(("grpc.ssl_target_name_override", self._server_name))
                self._channel = grpc.aio.secure_channel(
                    self.address, self._credentials, options=options
                )
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=options)
        return self._channel

    def unary(
        self, path: str, serializer: Callable[[Any], bytes], deserializer: Callable[[bytes], Any]
    ) -> UnaryCallable:
        """The unary method ``path`` on this endpoint's channel (kept per path)."""
        mc = self._unary.get(path)
        if mc is None:
            mc = self.channel.unary_unary(
                path, request_serializer=serializer, response_deserializer=deserializer
            )
            self._unary[path] = mc
        return mc

    def stream(
        self, path: str, serializer: Callable[[Any], bytes], deserializer: Callable[[bytes], Any]
    ) -> StreamCallable:
        """The bidi-streaming method ``path`` on this endpoint's channel (kept per path)."""
        mc = self._stream.get(path)
        if mc is None:
            mc = self.channel.stream_stream(
                path, request_serializer=serializer, response_deserializer=deserializer
            )
            self._stream[path] = mc
        return mc

    async def ready(self, until: float) -> bool:
        """Connect if needed; True once the channel is READY, False if it fails (refused,
        TRANSIENT_FAILURE) or is not READY by loop time ``until``. Nothing is sent."""
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        channel = self.channel
        state = channel.get_state(try_to_connect=True)
        if state != grpc.ChannelConnectivity.READY:
            self.reconnected = True
        while state != grpc.ChannelConnectivity.READY:
            if state in (
                grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                grpc.ChannelConnectivity.SHUTDOWN,
            ):
                return False
            remaining = until - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await channel.wait_for_state_change(state)
            except TimeoutError:
                return False
            state = channel.get_state(try_to_connect=True)
        return True

    async def close(self) -> None:
        """Close the channel; the endpoint refuses to make another."""
        self._closed = True
        channel, self._channel = self._channel, None
        self._unary.clear()
        self._stream.clear()
        if channel is not None:
            await channel.close(None)

    def __repr__(self) -> str:
        return f"Endpoint({self.address!r})"


def status_name(err: grpc.aio.AioRpcError) -> str:
    """The name of a failed request's status code (``"UNAVAILABLE"``, ...)."""
    code = err.code()
    return code.name if code is not None else "UNKNOWN"


def classify(err: grpc.aio.AioRpcError) -> ErrorKind:
    """The kind of a failed request (see ``_outcomes.classify_status``)."""
    return classify_status(status_name(err), err.details() or "")


def never_sent(err: grpc.aio.AioRpcError) -> bool:
    """True if the failed request certainly was not applied by etcd."""
    return not_sent(err.details() or "")


def map_error(
    err: grpc.aio.AioRpcError,
    endpoint: str,
    *,
    lease_id: int = 0,
    op: Op | None = None,
    user: str | None = None,
) -> EtcdError:
    """Our exception for a gRPC error that is not retried (``op``: what was refused)."""
    return error_for(
        status_name(err), err.details() or "", endpoint, lease_id=lease_id, op=op, user=user
    )
