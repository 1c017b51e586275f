"""``EtcdClient``: the synchronous twin of ``AsyncEtcdClient``.

Same method names and arguments; each call runs the async client's coroutine on a private
event-loop thread (:class:`grpc_etcd._loop.LoopThread`) and blocks for its result. Keep-alives
and watches run on that thread too, so they go on while the caller's thread does other work.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from grpc_etcd._closing import Closing
from grpc_etcd._loop import LoopThread, SyncIterator

from ._aio import AsyncEtcdClient
from ._keepalive import KeepAlive
from ._types import Key, KeyValue, Lease, Permission, Status, TLSConfig, WatchResponse

__all__ = ["EtcdClient", "SyncKeepAlive"]

T = TypeVar("T")


class SyncKeepAlive:
    """Handle of a lease kept alive by ``EtcdClient.keep_alive`` (thread-safe)."""

    def __init__(self, runner: LoopThread, handle: KeepAlive) -> None:
        self._runner = runner
        self._handle = handle
        self.lease_id = handle.lease_id
        self.ttl = handle.ttl

    @property
    def lost(self) -> bool:
        """True once the lease is known to be gone."""
        return self._handle.lost

    @property
    def active(self) -> bool:
        """True while the lease is being kept alive."""
        return self._handle.active

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost (True) or ``timeout`` passes (False)."""
        return self._handle.wait_lost_blocking(timeout)

    def stop(self) -> None:
        """Stop keeping the lease alive (does not revoke it). Idempotent."""
        if self._runner.closed:
            return
        if self._runner.in_loop_thread():
            self._handle.cancel()
        else:
            self._runner.run(self._handle.stop())

    def cancel(self) -> None:
        """Like ``stop()``, without waiting."""
        if not self._runner.closed:
            self._runner.call_soon(self._handle.cancel)

    def __repr__(self) -> str:
        return repr(self._handle).replace("<KeepAlive", "<SyncKeepAlive", 1)


class EtcdClient(Closing):
    """Synchronous etcd client; see :class:`AsyncEtcdClient` for the meaning of everything.

    ``loop``: run on this :class:`LoopThread` (shared with other sync objects, and not closed
    by ``close()``) instead of a private one. ``aio`` is the underlying ``AsyncEtcdClient``:
    coroutines using it may be run on ``loop``.

    Callbacks (``keep_alive(on_lost=...)``) run on the loop thread: they must not block, and
    must not call this client's blocking methods (hand the work to another thread).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 5.0,
        loop: LoopThread | None = None,
    ) -> None:
        self._aio = AsyncEtcdClient(
            endpoints, username=username, password=password, tls=tls, timeout=timeout
        )
        self._owns_loop = loop is None
        self._runner = loop if loop is not None else LoopThread(name="grpc-etcd-client")
        self._closed = False

    @property
    def aio(self) -> AsyncEtcdClient:
        """The AsyncEtcdClient this one drives."""
        return self._aio

    @property
    def loop(self) -> LoopThread:
        """The LoopThread the async client runs on."""
        return self._runner

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Blocking twin of :meth:`AsyncEtcdClient.endpoints`."""
        return self._aio.endpoints

    @property
    def timeout(self) -> float:
        """Blocking twin of :meth:`AsyncEtcdClient.timeout`."""
        return self._aio.timeout

    @property
    def closed(self) -> bool:
        """Blocking twin of :meth:`AsyncEtcdClient.closed`."""
        return self._closed

    @property
    def current_endpoint(self) -> str:
        """Blocking twin of :meth:`AsyncEtcdClient.current_endpoint`."""
        return self._aio.current_endpoint

    def __repr__(self) -> str:
        return f"<EtcdClient {','.join(self.endpoints)}{' closed' if self._closed else ''}>"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    # KV
    def get(self, key: Key, *, revision: int = 0, timeout: float | None = None) -> KeyValue | None:
        """Blocking twin of :meth:`AsyncEtcdClient.get`."""
        return self._run(self._aio.get(key, revision=revision, timeout=timeout))

    def get_prefix(
        self, prefix: Key, *, timeout: float | None = None
    ) -> tuple[list[KeyValue], int]:
        """Blocking twin of :meth:`AsyncEtcdClient.get_prefix`."""
        return self._run(self._aio.get_prefix(prefix, timeout=timeout))

    def read(
        self, key: Key, *, prefix: bool = False, timeout: float | None = None
    ) -> tuple[list[KeyValue], int]:
        """Blocking twin of :meth:`AsyncEtcdClient.read`."""
        return self._run(self._aio.read(key, prefix=prefix, timeout=timeout))

    def put(self, key: Key, value: Key, *, lease: int = 0, timeout: float | None = None) -> int:
        """Blocking twin of :meth:`AsyncEtcdClient.put`."""
        return self._run(self._aio.put(key, value, lease=lease, timeout=timeout))

    def put_if_absent(
        self, key: Key, value: Key, *, lease: int = 0, timeout: float | None = None
    ) -> bool:
        """Blocking twin of :meth:`AsyncEtcdClient.put_if_absent`."""
        return self._run(self._aio.put_if_absent(key, value, lease=lease, timeout=timeout))

    def put_if_lease(
        self,
        key: Key,
        value: Key,
        *,
        held_by: int,
        lease: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Blocking twin of :meth:`AsyncEtcdClient.put_if_lease`."""
        return self._run(
            self._aio.put_if_lease(key, value, held_by=held_by, lease=lease, timeout=timeout)
        )

    def put_if_unchanged(
        self, key: Key, value: Key, *, mod_revision: int, timeout: float | None = None
    ) -> int:
        """Blocking twin of :meth:`AsyncEtcdClient.put_if_unchanged`."""
        return self._run(
            self._aio.put_if_unchanged(key, value, mod_revision=mod_revision, timeout=timeout)
        )

    def delete_if_lease(self, key: Key, *, held_by: int, timeout: float | None = None) -> bool:
        """Blocking twin of :meth:`AsyncEtcdClient.delete_if_lease`."""
        return self._run(self._aio.delete_if_lease(key, held_by=held_by, timeout=timeout))

    def delete(self, key: Key, *, timeout: float | None = None) -> int:
        """Blocking twin of :meth:`AsyncEtcdClient.delete`."""
        return self._run(self._aio.delete(key, timeout=timeout))

    def delete_prefix(self, prefix: Key, *, timeout: float | None = None) -> int:
        """Blocking twin of :meth:`AsyncEtcdClient.delete_prefix`."""
        return self._run(self._aio.delete_prefix(prefix, timeout=timeout))

    def compact(
        self, revision: int, *, physical: bool = True, timeout: float | None = None
    ) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.compact`."""
        self._run(self._aio.compact(revision, physical=physical, timeout=timeout))

    # leases
    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> Lease:
        """Blocking twin of :meth:`AsyncEtcdClient.lease_grant`."""
        return self._run(self._aio.lease_grant(ttl, timeout=timeout))

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.lease_revoke`."""
        self._run(self._aio.lease_revoke(lease_id, timeout=timeout))

    def lease_time_to_live(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Blocking twin of :meth:`AsyncEtcdClient.lease_time_to_live`."""
        return self._run(self._aio.lease_time_to_live(lease_id, timeout=timeout))

    def keep_alive(
        self, lease_id: int, ttl: int, on_lost: Callable[[int], None] | None = None
    ) -> SyncKeepAlive:
        """See ``AsyncEtcdClient.keep_alive``; ``on_lost`` runs on the loop thread."""

        async def start() -> KeepAlive:
            return self._aio.keep_alive(lease_id, ttl, on_lost)

        handle: KeepAlive = self._run(start())
        return SyncKeepAlive(self._runner, handle)

    # watch
    def watch(
        self,
        key: Key,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        progress_notify: bool = False,
        prev_kv: bool = False,
        created_notify: bool = False,
    ) -> SyncIterator[WatchResponse]:
        """See ``AsyncEtcdClient.watch``. The iterator is driven on the loop thread; call
        ``close()`` on it (or use it as a context manager) to cancel the watch."""
        agen = self._aio.watch(
            key,
            prefix=prefix,
            start_revision=start_revision,
            progress_notify=progress_notify,
            prev_kv=prev_kv,
            created_notify=created_notify,
        )
        return self._runner.iterate(agen)

    # maintenance
    def status(self, *, endpoint: str | None = None, timeout: float | None = None) -> Status:
        """Blocking twin of :meth:`AsyncEtcdClient.status`."""
        return self._run(self._aio.status(endpoint=endpoint, timeout=timeout))

    # auth: roles and users
    def auth_enabled(self, *, timeout: float | None = None) -> bool:
        """Blocking twin of :meth:`AsyncEtcdClient.auth_enabled`."""
        return self._run(self._aio.auth_enabled(timeout=timeout))

    def role_get(self, role: str, *, timeout: float | None = None) -> tuple[Permission, ...] | None:
        """Blocking twin of :meth:`AsyncEtcdClient.role_get`."""
        return self._run(self._aio.role_get(role, timeout=timeout))

    def role_add(self, role: str, *, timeout: float | None = None) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.role_add`."""
        self._run(self._aio.role_add(role, timeout=timeout))

    def role_grant_permission(
        self, role: str, permission: Permission, *, timeout: float | None = None
    ) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.role_grant_permission`."""
        self._run(self._aio.role_grant_permission(role, permission, timeout=timeout))

    def role_revoke_permission(
        self, role: str, key: Key, range_end: Key = b"", *, timeout: float | None = None
    ) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.role_revoke_permission`."""
        self._run(self._aio.role_revoke_permission(role, key, range_end, timeout=timeout))

    def user_list(self, *, timeout: float | None = None) -> list[str]:
        """Blocking twin of :meth:`AsyncEtcdClient.user_list`."""
        return self._run(self._aio.user_list(timeout=timeout))

    def user_get(self, user: str, *, timeout: float | None = None) -> tuple[str, ...] | None:
        """Blocking twin of :meth:`AsyncEtcdClient.user_get`."""
        return self._run(self._aio.user_get(user, timeout=timeout))

    def user_grant_role(self, user: str, role: str, *, timeout: float | None = None) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.user_grant_role`."""
        self._run(self._aio.user_grant_role(user, role, timeout=timeout))

    def user_revoke_role(self, user: str, role: str, *, timeout: float | None = None) -> None:
        """Blocking twin of :meth:`AsyncEtcdClient.user_revoke_role`."""
        self._run(self._aio.user_revoke_role(user, role, timeout=timeout))

    # lifecycle
    def close(self) -> None:
        """Stop keep-alives (no revoke), end watches, close channels; then stop the private
        loop thread (a shared ``loop`` is left running). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._runner.closed:
            self._runner.run(self._aio.close())
        if self._owns_loop:
            self._runner.close()
