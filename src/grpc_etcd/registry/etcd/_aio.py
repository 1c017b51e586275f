"""``AsyncEtcdClient``: grpc_etcd's own small etcd v3 client, on grpc.aio: the requests.

The endpoints, the auth token and the retry rules are the session's (``_session.py``); the
watch stream is ``_watch.py``, the lease keep-alive ``_keepalive.py``. ``EtcdClient``
(``_sync.py``) drives this class on a private event-loop thread.

Streams: all leases share one ``LeaseKeepAlive`` stream; each watch has its own ``Watch``
stream, re-created from the last revision delivered + 1 when it breaks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from ..._closing import AsyncClosing
from ._keepalive import KeepAlive, KeepAliver
from ._outcomes import Op
from ._proto import etcd_pb2 as pb
from ._session import Session
from ._transport import (
    AUTH_STATUS,
    KV_COMPACT,
    KV_DELETE_RANGE,
    KV_PUT,
    KV_RANGE,
    KV_TXN,
    LEASE_GRANT,
    LEASE_REVOKE,
    LEASE_TIME_TO_LIVE,
    ROLE_ADD,
    ROLE_GET,
    ROLE_GRANT_PERMISSION,
    ROLE_REVOKE_PERMISSION,
    STATUS,
    USER_GET,
    USER_GRANT_ROLE,
    USER_LIST,
    USER_REVOKE_ROLE,
)
from ._types import (
    Access,
    EtcdError,
    Key,
    KeyValue,
    Lease,
    Permission,
    Status,
    TLSConfig,
    WatchResponse,
    prefix_range_end,
)
from ._watch import WatchSpec, to_kv, watch_stream

__all__ = ["AsyncEtcdClient", "prefix_range_end"]

R = TypeVar("R")

#: etcd's ``authpb.Permission.Type``, by number
_ACCESS: tuple[Access, ...] = ("read", "write", "readwrite")


def _b(value: Key) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def _prefix_range(prefix: Key) -> tuple[bytes, bytes]:
    key = _b(prefix)
    if not key:
        return b"\0", b"\0"  # every key
    return key, prefix_range_end(key)


def _bound_to(key: bytes, lease: int) -> pb.Compare:
    """The txn test "``key`` is bound to ``lease``" (0: to no lease)."""
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.LEASE, key=key, lease=lease)


class AsyncEtcdClient(AsyncClosing):
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
        self._session = Session(
            endpoints, username=username, password=password, tls=tls, timeout=timeout
        )
        self.endpoints: tuple[str, ...] = self._session.addresses
        self.tls = self._session.tls
        self._keepaliver = KeepAliver(self._session)

    # ------------------------------------------------------------------ properties

    @property
    def timeout(self) -> float:
        """Default deadline of a request, in seconds."""
        return self._session.timeout

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._session.closed

    @property
    def current_endpoint(self) -> str:
        """The endpoint requests try first (the one that answered last)."""
        return self._session.current_endpoint

    def __repr__(self) -> str:
        closed = " closed" if self.closed else ""
        return f"<AsyncEtcdClient {','.join(self.endpoints)}{closed}>"

    # ------------------------------------------------------------------ KV

    async def get(
        self,
        key: Key,
        *,
        revision: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> KeyValue | None:
        """The key, or ``None`` if it does not exist (linearizable read).

        ``revision``: the key as it was at that store revision (0: now). etcd keeps every
        version until a compaction: ``CompactedError`` when that revision is compacted away,
        ``EtcdError`` for a revision etcd has not reached yet.
        """
        if revision < 0:
            raise ValueError(f"revision must be >= 0, got {revision}")
        k = _b(key)
        resp = await self._range(k, b"", timeout, Op("read", k), revision)
        return to_kv(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(
        self,
        prefix: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix`` (sorted by key), and the store revision of the
        read: watch from that revision + 1 to miss nothing."""
        k, end = _prefix_range(prefix)
        resp = await self._range(k, end, timeout, Op("read", _b(prefix), prefix=True))
        return [to_kv(m) for m in resp.kvs], resp.header.revision

    async def read(
        self,
        key: Key,
        *,
        prefix: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> tuple[list[KeyValue], int]:
        """The key (none or one), or every key under ``prefix=True``, and the store revision of
        the read: watch from that revision + 1 to miss nothing. Reading one key needs read
        permission on that key only."""
        if prefix:
            return await self.get_prefix(key, timeout=timeout)
        k = _b(key)
        resp = await self._range(k, b"", timeout, Op("read", k))
        return [to_kv(m) for m in resp.kvs], resp.header.revision

    async def _range(
        self,
        key: bytes,
        end: bytes,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        op: Op,
        revision: int = 0,
    ) -> Any:
        return await self._call(
            KV_RANGE,
            pb.RangeRequest(key=key, range_end=end, revision=revision),
            pb.RangeResponse,
            idempotent=True,
            timeout=timeout,
            op=op,
        )

    async def put(
        self,
        key: Key,
        value: Key,
        *,
        lease: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Write the key; return the revision of the write."""
        k = _b(key)
        resp = await self._call(
            KV_PUT,
            pb.PutRequest(key=k, value=_b(value), lease=int(lease)),
            pb.PutResponse,
            idempotent=False,
            timeout=timeout,
            lease_id=int(lease),
            op=Op("put", k),
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
        return await self._txn(
            pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=k, create_revision=0),
            pb.RequestOp(request_put=pb.PutRequest(key=k, value=_b(value), lease=int(lease))),
            timeout=timeout,
            lease_id=int(lease),
            op=Op("put", k),
        )

    async def put_if_lease(
        self,
        key: Key,
        value: Key,
        *,
        held_by: int,
        lease: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> bool:
        """Write the key only if it is bound to lease ``held_by`` (one txn), with lease
        ``lease`` (default: ``held_by``); True if written. ``held_by=0``: only if the key has
        no lease (or does not exist)."""
        k = _b(key)
        new_lease = int(held_by if lease is None else lease)
        return await self._txn(
            _bound_to(k, int(held_by)),
            pb.RequestOp(request_put=pb.PutRequest(key=k, value=_b(value), lease=new_lease)),
            timeout=timeout,
            lease_id=new_lease,
            op=Op("put", k),
        )

    async def put_if_unchanged(
        self,
        key: Key,
        value: Key,
        *,
        mod_revision: int,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Write the key only if its last write is still the one at ``mod_revision`` (0: only
        if it does not exist), in one txn: a read-modify-write that loses no one else's
        write. The revision of the write, or 0 when the key had changed (nothing written)."""
        k = _b(key)
        unchanged = pb.Compare(
            result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=k, mod_revision=mod_revision
        )
        put = pb.RequestOp(request_put=pb.PutRequest(key=k, value=_b(value)))
        resp = await self._call(
            KV_TXN,
            pb.TxnRequest(compare=[unchanged], success=[put]),
            pb.TxnResponse,
            idempotent=False,
            timeout=timeout,
            op=Op("put", k),
        )
        return int(resp.header.revision) if resp.succeeded else 0

    async def delete_if_lease(
        self,
        key: Key,
        *,
        held_by: int,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> bool:
        """Delete the key only if it is bound to lease ``held_by`` (one txn); True if deleted.
        ``held_by=0``: only if the key has no lease."""
        k = _b(key)
        return await self._txn(
            _bound_to(k, int(held_by)),
            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k)),
            timeout=timeout,
            lease_id=int(held_by),
            op=Op("delete", k),
        )

    async def _txn(
        self,
        compare: pb.Compare,
        then: pb.RequestOp,
        *,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        lease_id: int,
        op: Op,
    ) -> bool:
        """``then`` if ``compare`` holds (one txn); True if it did. ``op`` names it in errors
        (etcd checks read permission on the compared key and write on the written one)."""
        resp = await self._call(
            KV_TXN,
            pb.TxnRequest(compare=[compare], success=[then]),
            pb.TxnResponse,
            idempotent=False,
            timeout=timeout,
            lease_id=lease_id,
            op=op,
        )
        return bool(resp.succeeded)

    async def delete(
        self,
        key: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Delete the key; return how many keys were deleted (0 or 1)."""
        k = _b(key)
        return await self._delete_range(k, b"", timeout, Op("delete", k))

    async def delete_prefix(
        self,
        prefix: Key,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> int:
        """Delete every key starting with ``prefix``; return how many were deleted."""
        k, end = _prefix_range(prefix)
        return await self._delete_range(k, end, timeout, Op("delete", _b(prefix), prefix=True))

    async def _delete_range(
        self,
        key: bytes,
        end: bytes,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        op: Op,
    ) -> int:
        resp = await self._call(
            KV_DELETE_RANGE,
            pb.DeleteRangeRequest(key=key, range_end=end),
            pb.DeleteRangeResponse,
            idempotent=False,
            timeout=timeout,
            op=op,
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
            op=Op(f"compact at revision {revision}"),
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
            op=Op("grant a lease"),
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
            op=Op("revoke", lease_id=int(lease_id)),
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
            op=Op("read the time to live of", lease_id=int(lease_id)),
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
        self._session.check_open()
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
        created_notify: bool = False,
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

        ``created_notify=True``: first yield one ``WatchResponse(created=True)`` once etcd has
        created the watch; a read made after it misses nothing the watch will not deliver
        (read, then drop events at or below the read's revision: no gap, no repeat).
        """
        self._session.check_open()
        if prefix:
            k, end = _prefix_range(key)
        else:
            k, end = _b(key), b""
        spec = WatchSpec(
            k,
            end,
            progress_notify=progress_notify,
            prev_kv=prev_kv,
            created_notify=created_notify,
        )
        return watch_stream(self._session, spec, max(0, int(start_revision)))

    # ------------------------------------------------------------------ maintenance

    async def status(
        self,
        *,
        endpoint: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> Status:
        """``Maintenance.Status`` of the first member that answers, or of ``endpoint`` (one of
        ``endpoints``, no failover)."""
        resp, address = await self._session.call(
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

    # ------------------------------------------------------------------ auth: roles and users
    # etcd lets only a user with the root role make these requests (or anyone while auth is off).

    async def auth_enabled(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> bool:
        """Whether etcd has auth enabled (etcd >= 3.5)."""
        resp = await self._call(
            AUTH_STATUS,
            pb.AuthStatusRequest(),
            pb.AuthStatusResponse,
            idempotent=True,
            timeout=timeout,
            op=Op("read the auth status"),
        )
        return bool(resp.enabled)

    async def role_get(
        self,
        role: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> tuple[Permission, ...] | None:
        """The role's key permissions, or None if there is no such role."""
        try:
            resp = await self._call(
                ROLE_GET,
                pb.AuthRoleGetRequest(role=role),
                pb.AuthRoleGetResponse,
                idempotent=True,
                timeout=timeout,
                op=Op(f"read role {role}"),
            )
        except EtcdError as err:
            if "role name not found" in str(err):
                return None
            raise
        return tuple(
            Permission(_ACCESS[p.permType], bytes(p.key), bytes(p.range_end)) for p in resp.perm
        )

    async def role_add(
        self,
        role: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Create a role with no permissions (an error if it exists)."""
        await self._call(
            ROLE_ADD,
            pb.AuthRoleAddRequest(name=role),
            pb.AuthRoleAddResponse,
            idempotent=False,
            timeout=timeout,
            op=Op(f"add role {role}"),
        )

    async def role_grant_permission(
        self,
        role: str,
        permission: Permission,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Give the role this key permission (it replaces one on the same exact range)."""
        perm = pb.Permission(
            permType=permission.access.upper(),  # READ, WRITE or READWRITE
            key=permission.key,
            range_end=permission.range_end,
        )
        await self._call(
            ROLE_GRANT_PERMISSION,
            pb.AuthRoleGrantPermissionRequest(name=role, perm=perm),
            pb.AuthRoleGrantPermissionResponse,
            idempotent=True,
            timeout=timeout,
            op=Op(f"grant role {role} {permission.access} on", permission.key),
        )

    async def role_revoke_permission(
        self,
        role: str,
        key: Key,
        range_end: Key = b"",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Take back the role's permission on exactly ``[key, range_end)``."""
        request = pb.AuthRoleRevokePermissionRequest(
            role=role, key=_b(key), range_end=_b(range_end)
        )
        await self._call(
            ROLE_REVOKE_PERMISSION,
            request,
            pb.AuthRoleRevokePermissionResponse,
            idempotent=True,
            timeout=timeout,
            op=Op(f"revoke role {role}'s permission on", _b(key)),
        )

    async def user_list(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> list[str]:
        """Every etcd user's name."""
        resp = await self._call(
            USER_LIST,
            pb.AuthUserListRequest(),
            pb.AuthUserListResponse,
            idempotent=True,
            timeout=timeout,
            op=Op("list the users"),
        )
        return list(resp.users)

    async def user_get(
        self,
        user: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> tuple[str, ...] | None:
        """The user's roles, or None if there is no such user."""
        try:
            resp = await self._call(
                USER_GET,
                pb.AuthUserGetRequest(name=user),
                pb.AuthUserGetResponse,
                idempotent=True,
                timeout=timeout,
                op=Op(f"read user {user}"),
            )
        except EtcdError as err:
            if "user name not found" in str(err):
                return None
            raise
        return tuple(resp.roles)

    async def user_grant_role(
        self,
        user: str,
        role: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Give the user the role (nothing happens if it has it)."""
        await self._call(
            USER_GRANT_ROLE,
            pb.AuthUserGrantRoleRequest(user=user, role=role),
            pb.AuthUserGrantRoleResponse,
            idempotent=True,
            timeout=timeout,
            op=Op(f"grant role {role} to user {user}"),
        )

    async def user_revoke_role(
        self,
        user: str,
        role: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
    ) -> None:
        """Take the role back from the user (an error if the user does not have it)."""
        await self._call(
            USER_REVOKE_ROLE,
            pb.AuthUserRevokeRoleRequest(name=user, role=role),
            pb.AuthUserRevokeRoleResponse,
            idempotent=False,
            timeout=timeout,
            op=Op(f"revoke role {role} from user {user}"),
        )

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop every keep-alive (without revoking: that is the caller's job), end every watch
        and close the channels. Idempotent."""
        if self._session.closed:
            return
        await self._keepaliver.close()
        await self._session.close()

    async def _call(
        self,
        path: str,
        request: Any,
        response_type: type[R],
        *,
        idempotent: bool,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline over all retries
        lease_id: int = 0,
        not_found_ok_on_retry: bool = False,
        op: Op | None = None,
    ) -> R:
        response, _ = await self._session.call(
            path,
            request,
            response_type,
            idempotent=idempotent,
            timeout=timeout,
            lease_id=lease_id,
            not_found_ok_on_retry=not_found_ok_on_retry,
            op=op,
        )
        return response
