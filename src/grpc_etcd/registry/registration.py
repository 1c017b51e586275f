"""One server instance's registration: a lease, a key bound to it, kept alive and repaired.

This is the asyncio core; ``grpc_etcd.Registration`` (sync) drives the same object on the
sync registry's loop thread. Unlike the Go original, a registration never gives up while it
is open: a lost lease (etcd restarted empty, revoked, a cut longer than the TTL) is granted
again and the record written again, and a deleted or overwritten key is written again at the
next check (every TTL/3, the keep-alive cadence). ``close()`` deletes the key *and* revokes
the lease, so nothing lingers for a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Mapping
from types import TracebackType

from ..backoff import Backoff
from ..metrics import get_metrics
from ..node import Node, encode_record
from .etcd import AsyncEtcdClient, EtcdError, LeaseNotFoundError

__all__ = ["Registration", "RegistrationState"]

log = logging.getLogger("grpc_etcd.registration")

# A lost registration is retried quickly at first: the key is missing meanwhile.
_RETRY_BASE = 0.05
_RETRY_CAP = 2.0


class RegistrationState(enum.Enum):
    """Where a registration stands."""

    REGISTERED = "registered"  #: the key is in etcd, bound to a live lease
    LOST = "lost"  #: the lease or key was lost; registering again with backoff
    CLOSED = "closed"  #: closed by its owner; the key is deleted and the lease revoked


class Registration:
    """A registered instance (asyncio). Made by ``grpc_etcd.aio.Registry.register``."""

    def __init__(self, client: AsyncEtcdClient, node: Node, *, ttl: int, root: str = "") -> None:
        if ttl < 2:
            raise ValueError(f"ttl must be at least 2 seconds, got {ttl}")
        self._client = client
        self._node = node
        self._root = root
        self._record = encode_record(node, root)
        self.ttl = ttl
        self.lease_id = 0
        self.state = RegistrationState.LOST
        self._wake = asyncio.Event()
        self._lease_lost = asyncio.Event()
        self._keep_alive: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one writer of lease/record at a time

    # -------------------------------------------------------------- public

    @property
    def node(self) -> Node:
        """The node as it is registered now."""
        return self._node

    @property
    def key(self) -> str:
        """The etcd key of this instance."""
        return self._node.key

    async def start(self) -> Registration:
        """Register for the first time (raises if etcd cannot be reached), then keep it up."""
        await self._register()
        self._task = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"grpc-etcd registration {self.key}"
        )
        return self

    async def update(
        self,
        *,
        version: str | None = None,
        metadata: Mapping[str, str] | None = None,
        weight: int | None = None,
    ) -> None:
        """Rewrite the record in place (same key, same lease) with a new version/metadata/weight."""
        self._check_open()
        new_metadata = dict(self._node.metadata if metadata is None else metadata)
        if weight is not None:
            new_metadata["weight"] = str(_check_weight(weight))
        node = Node(
            service=self._node.service,
            id=self._node.id,
            address=self._node.address,
            version=self._node.version if version is None else _check_version(version),
            metadata=new_metadata,
            methods=self._node.methods,
            key=self._node.key,
        )
        async with self._lock:
            self._node = node
            self._record = encode_record(node, self._root)
            if self.state is RegistrationState.REGISTERED:
                await self._client.put(self.key, self._record, lease=self.lease_id)
        log.info("registration %s updated: version=%s", self.key, node.version)

    async def close(self) -> None:
        """Stop keeping the lease alive, delete the key and revoke the lease. Idempotent."""
        if self.state is RegistrationState.CLOSED:
            return
        self._set_state(RegistrationState.CLOSED)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_keep_alive()
        async with self._lock:
            try:
                await self._client.delete(self.key)
                if self.lease_id:
                    await self._client.lease_revoke(self.lease_id)
            except LeaseNotFoundError:
                pass
            except EtcdError as exc:
                log.warning(
                    "registration %s: could not remove the key on close (%s); "
                    "it expires with its lease within %ss",
                    self.key,
                    exc,
                    self.ttl,
                )
        log.info("registration %s closed", self.key)

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Registration {self.key} {self._node.version} {self.state.value}>"

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self.state is RegistrationState.CLOSED:
            raise RuntimeError(f"registration {self.key} is closed")

    def _set_state(self, state: RegistrationState) -> None:
        self.state = state
        get_metrics().registration_state(self._node.service, self.key, state.value)

    def _on_lease_lost(self, lease_id: int) -> None:
        if lease_id == self.lease_id:
            self._lease_lost.set()
            self._wake.set()

    async def _stop_keep_alive(self) -> None:
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            await keep_alive.stop()  # type: ignore[attr-defined]

    async def _register(self) -> None:
        """Grant a lease, write the record with it and keep the lease alive."""
        async with self._lock:
            await self._stop_keep_alive()
            lease_id = await self._client.lease_grant(self.ttl)
            try:
                await self._client.put(self.key, self._record, lease=lease_id)
            except BaseException:
                with contextlib.suppress(EtcdError):
                    await self._client.lease_revoke(lease_id)
                raise
            self.lease_id = lease_id
            self._lease_lost.clear()
            self._keep_alive = self._client.keep_alive(
                lease_id, self.ttl, on_lost=self._on_lease_lost
            )
            self._set_state(RegistrationState.REGISTERED)

    async def _repair_key(self) -> None:
        """Write the record again if someone deleted or overwrote the key."""
        kv = await self._client.get(self.key)
        if kv is not None and kv.lease == self.lease_id and kv.value == self._record:
            return
        async with self._lock:
            if self.state is not RegistrationState.REGISTERED:
                return
            log.warning(
                "registration %s: key was %s; writing it again",
                self.key,
                "deleted" if kv is None else "changed by someone else",
            )
            await self._client.put(self.key, self._record, lease=self.lease_id)

    async def _maintain(self) -> None:
        check_every = self.ttl / 3
        backoff = Backoff(_RETRY_BASE, min(_RETRY_CAP, check_every))
        while True:
            if self.state is RegistrationState.REGISTERED:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), check_every)
                self._wake.clear()
                if self._lease_lost.is_set():
                    self._set_state(RegistrationState.LOST)
                    log.warning(
                        "registration %s lost its lease %x; registering again",
                        self.key,
                        self.lease_id,
                    )
                    continue
                try:
                    await self._repair_key()
                except LeaseNotFoundError:
                    self._lease_lost.set()
                    self._wake.set()
                except EtcdError as exc:
                    log.debug("registration %s: key check failed: %s", self.key, exc)
                continue
            try:
                await self._register()
            except EtcdError as exc:
                delay = backoff.next_delay()
                log.debug("registration %s: retry in %.2fs after %s", self.key, delay, exc)
                await asyncio.sleep(delay)
                continue
            log.warning(
                "registration %s recovered after %d attempt(s) (lease %x)",
                self.key,
                backoff.attempts + 1,
                self.lease_id,
            )
            get_metrics().recovered(self._node.service)
            backoff.reset()


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not version or any(c.isspace() for c in version):
        raise ValueError(f"version must be a non-empty string without spaces, got {version!r}")
    return version


def _check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ValueError(f"weight must be a non-negative int, got {weight!r}")
    return weight
