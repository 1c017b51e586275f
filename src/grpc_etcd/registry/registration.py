"""One server instance's registration: a lease, a key bound to it, kept alive and repaired.

This is the asyncio core; ``grpc_etcd.Registration`` (sync) drives the same object on the
sync registry's loop thread. Unlike the Go original, a registration never gives up while it
is open: a lost lease (etcd restarted empty, revoked, a cut longer than the TTL) is granted
again and the record written again, and a deleted or overwritten key is written again at the
next check (every TTL/3, the keep-alive cadence). ``close()`` deletes the key *and* revokes
the lease, so nothing lingers for a TTL.

One key, one owner: a key is only ever created when it is absent and rewritten or deleted when
it is bound to this registration's own lease (etcd transactions), so a second live
registration of the same service and ``instance_id`` is refused (``DuplicateRegistrationError``)
instead of fighting the first for the key.

The machinery is :class:`LeasedKey`'s, for any record: a channel's client key (docs/scale.md)
is one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import Self

from .._closing import AsyncClosing
from ..backoff import Backoff
from ..errors import ClosedError, DuplicateRegistrationError
from ..metrics import get_metrics
from ..node import Node, check_ttl, updated_node
from ..record import encode_record
from .etcd import AsyncEtcdClient, EtcdError, KeyValue, LeaseNotFoundError

__all__ = ["KeyState", "LeasedKey", "Registration", "RegistrationState", "judge_key"]

log = logging.getLogger("grpc_etcd.registration")

# A lost registration is retried quickly at first: the key is missing meanwhile.
_RETRY_BASE = 0.05
_RETRY_CAP = 2.0


class RegistrationState(enum.Enum):
    """Where a registration stands."""

    REGISTERED = "registered"  #: the key is in etcd, bound to a live lease
    LOST = "lost"  #: the lease or key was lost; registering again with backoff
    CLOSED = "closed"  #: closed by its owner; the key is deleted and the lease revoked


class KeyState(enum.Enum):
    """What a check of the key found (see :func:`judge_key`)."""

    OURS = "ours"  #: bound to our lease, with our record
    MISSING = "missing"  #: deleted: create it again
    CHANGED = "changed"  #: bound to our lease, another value: write ours again
    STRAY = "stray"  #: written without a lease (by hand?): no registration holds it, take it
    TAKEN = "taken"  #: bound to another lease: another registration holds it


def judge_key(kv: KeyValue | None, lease_id: int, record: bytes) -> KeyState:
    """The state of the key as read, for a registration holding ``lease_id``."""
    if kv is None:
        return KeyState.MISSING
    if kv.lease == 0:
        return KeyState.STRAY
    if kv.lease != lease_id:
        return KeyState.TAKEN
    return KeyState.OURS if kv.value == record else KeyState.CHANGED


class LeasedKey(AsyncClosing):
    """One etcd key bound to a lease of its own, kept alive and repaired until ``close()``
    (asyncio): the machinery of a :class:`Registration`, for any record.

    ``start()`` writes it once (raising if etcd cannot be reached) and then keeps it up; a
    subclass may instead ``_spawn()`` the upkeep at once, which writes it in the background,
    retrying with backoff for as long as it is open. ``service`` names whom the key serves.
    """

    #: What the logs call such a key.
    _KIND = "key"

    def __init__(
        self, client: AsyncEtcdClient, key: str, record: bytes, *, ttl: int, service: str = ""
    ) -> None:
        check_ttl(ttl)
        self._client = client
        self._key = key
        self._record = record
        self._service = service
        self.ttl = ttl
        self.lease_id = 0
        self.state = RegistrationState.LOST
        self._written = False  # once written, a new write is a recovery
        self._wake = asyncio.Event()
        self._lease_lost = asyncio.Event()
        self._keep_alive: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one writer of lease/record at a time

    # -------------------------------------------------------------- public

    @property
    def key(self) -> str:
        """The etcd key held."""
        return self._key

    async def start(self) -> Self:
        """Write the key for the first time (raises if etcd cannot be reached), then keep it up.

        If another lease holds the key, wait until that lease could have expired (its TTL
        left, plus 2 s for etcd to revoke it): a process that died without closing (restarted
        with the same ``instance_id``) frees it by then; one that is still alive does not, and
        ``DuplicateRegistrationError`` is raised."""
        await self._wait_for_free_key()
        await self._register()
        self._spawn()
        return self

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
                if self.lease_id:
                    # only our own key: another registration may hold it now
                    await self._client.delete_if_lease(self.key, held_by=self.lease_id)
                    await self._client.lease_revoke(self.lease_id)
            except LeaseNotFoundError:
                pass
            except EtcdError as exc:
                log.warning(
                    "%s %s: could not remove the key on close (%s); "
                    "it expires with its lease within %ss",
                    self._KIND,
                    self.key,
                    exc,
                    self.ttl,
                )
        log.info("%s %s closed", self._KIND, self.key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self.state is RegistrationState.CLOSED:
            raise ClosedError(f"{self._KIND} {self.key}")

    def _set_state(self, state: RegistrationState) -> None:
        self.state = state
        self._report(state)

    def _report(self, state: RegistrationState) -> None:
        """Tell the metrics of a new state (a registration does; a plain key does not)."""

    def _report_recovery(self) -> None:
        """Tell the metrics the key was written again after a loss."""

    def _spawn(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"grpc-etcd {self._KIND} {self.key}"
        )

    def _on_lease_lost(self, lease_id: int) -> None:
        if lease_id == self.lease_id:
            self._lease_lost.set()
            self._wake.set()

    async def _stop_keep_alive(self) -> None:
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            await keep_alive.stop()  # type: ignore[attr-defined]

    async def _wait_for_free_key(self) -> None:
        kv = await self._client.get(self.key)
        if kv is None or kv.lease == 0:
            return
        left = await self._client.lease_time_to_live(kv.lease)
        if left < 0:
            return
        log.info(
            "%s %s: the key is held by lease %x; waiting up to %d s for it to expire",
            self._KIND,
            self.key,
            kv.lease,
            left + 2,
        )
        events = self._client.watch(self.key, start_revision=kv.mod_revision + 1)
        async with contextlib.aclosing(events):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left + 2.0):
                    async for response in events:
                        if any(event.type == "delete" for event in response.events):
                            return

    async def _register(self) -> None:
        """Grant a lease, write the record with it and keep the lease alive."""
        async with self._lock:
            await self._stop_keep_alive()
            lease_id = await self._client.lease_grant(self.ttl)
            try:
                await self._claim(lease_id)
            except BaseException:
                with contextlib.suppress(EtcdError):
                    await self._client.lease_revoke(lease_id)
                raise
            self.lease_id = lease_id
            self._written = True
            self._lease_lost.clear()
            self._keep_alive = self._client.keep_alive(
                lease_id, self.ttl, on_lost=self._on_lease_lost
            )
            self._set_state(RegistrationState.REGISTERED)

    async def _claim(self, lease_id: int) -> None:
        """Write the record with ``lease_id`` if the key is free or still bound to our previous
        lease (lost only in our eyes); refuse a key another live lease holds."""
        if await self._client.put_if_absent(self.key, self._record, lease=lease_id):
            return
        kv = await self._client.get(self.key)
        if kv is None and await self._client.put_if_absent(self.key, self._record, lease=lease_id):
            return  # deleted in between
        # bound to none at all (written by hand), or still to our previous lease (lost only
        # in our eyes): ours to take
        if (
            kv is not None
            and kv.lease in (0, self.lease_id)
            and await self._client.put_if_lease(
                self.key, self._record, held_by=kv.lease, lease=lease_id
            )
        ):
            if kv.lease:
                with contextlib.suppress(EtcdError):
                    await self._client.lease_revoke(kv.lease)
            return
        raise DuplicateRegistrationError(self.key)

    async def _repair_key(self) -> None:
        """Write the record again if someone deleted it or changed it under our lease; give
        the key up (and register again, with backoff) if another lease holds it."""
        kv = await self._client.get(self.key)
        verdict = judge_key(kv, self.lease_id, self._record)
        if verdict is KeyState.OURS:
            return
        async with self._lock:
            if self.state is not RegistrationState.REGISTERED:
                return
            if verdict is KeyState.TAKEN:
                log.warning(
                    "%s %s: the key is held by another lease (%x); registering again "
                    "once it is free",
                    self._KIND,
                    self.key,
                    kv.lease if kv is not None else 0,
                )
                await self._stop_keep_alive()
                with contextlib.suppress(EtcdError):
                    await self._client.lease_revoke(self.lease_id)
                self.lease_id = 0
                self._set_state(RegistrationState.LOST)
                return
            log.warning(
                "%s %s: key was %s; writing it again",
                self._KIND,
                self.key,
                {
                    KeyState.MISSING: "deleted",
                    KeyState.STRAY: "overwritten without a lease",
                }.get(verdict, "changed under our lease"),
            )
            if verdict is KeyState.MISSING:
                await self._client.put_if_absent(self.key, self._record, lease=self.lease_id)
            else:
                held_by = 0 if verdict is KeyState.STRAY else self.lease_id
                await self._client.put_if_lease(
                    self.key, self._record, held_by=held_by, lease=self.lease_id
                )

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
                        "%s %s lost its lease %x; registering again",
                        self._KIND,
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
                    log.debug("%s %s: key check failed: %s", self._KIND, self.key, exc)
                continue
            recovering = self.lease_id != 0 or self._written
            try:
                await self._register()
            except (EtcdError, DuplicateRegistrationError) as exc:
                delay = backoff.next_delay()
                log.debug("%s %s: retry in %.2fs after %s", self._KIND, self.key, delay, exc)
                await asyncio.sleep(delay)
                continue
            attempts = backoff.attempts + 1
            backoff.reset()
            if not recovering:  # the first write of keep()
                log.debug("%s %s written (lease %x)", self._KIND, self.key, self.lease_id)
                continue
            log.warning(
                "%s %s recovered after %d attempt(s) (lease %x)",
                self._KIND,
                self.key,
                attempts,
                self.lease_id,
            )
            self._report_recovery()


class Registration(LeasedKey):
    """A registered instance (asyncio). Made by ``grpc_etcd.aio.Registry.register``."""

    _KIND = "registration"

    def __init__(self, client: AsyncEtcdClient, node: Node, *, ttl: int, root: str = "") -> None:
        super().__init__(client, node.key, encode_record(node, root), ttl=ttl, service=node.service)
        self._node = node
        self._root = root

    @property
    def node(self) -> Node:
        """The node as it is registered now."""
        return self._node

    async def update(
        self,
        *,
        version: str | None = None,
        metadata: Mapping[str, str] | None = None,
        weight: int | None = None,
    ) -> None:
        """Rewrite the record in place (same key, same lease) with a new version, metadata
        (replaces the whole map) and/or weight, checked as ``register()`` checks them."""
        self._check_open()
        node = updated_node(self._node, version=version, metadata=metadata, weight=weight)
        async with self._lock:
            self._node = node
            self._record = encode_record(node, self._root)
            if self.state is RegistrationState.REGISTERED and not await self._client.put_if_lease(
                self.key, self._record, held_by=self.lease_id
            ):
                self._wake.set()  # the key is not ours right now: the next check repairs it
        log.info("registration %s updated: version=%s", self.key, node.version)

    def __repr__(self) -> str:
        return f"<Registration {self.key} {self._node.version} {self.state.value}>"

    def _report(self, state: RegistrationState) -> None:
        get_metrics().registration_state(self._service, self.key, state.value)

    def _report_recovery(self) -> None:
        get_metrics().recovered(self._service)
