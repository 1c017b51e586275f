"""Discovery: watch a service's prefix, then read it, gap-free (asyncio core).

The watch is opened first (from "now") and, once etcd has created it, the prefix is read at
revision R; events at or below R are already in the read and are dropped. So no change is lost
and none waits: a watch created from a past revision (read, then watch from R + 1, etcd's
``client/v3/naming`` idiom) is "unsynced" in etcd and gets a change made in between only from
etcd's 100 ms sync loop. The etcd client resumes a broken watch from the last revision it
delivered; what reaches us here is a compaction (watch and read again, publish the difference)
or a hard failure (the same, with backoff; a refusal, which only a change of permissions ends,
is warned about once, not at every retry). Meanwhile the last snapshot stands: an unreachable
etcd never empties the node set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass

from ..allowlist import AllowList, Network, allow_list
from ..backoff import Backoff
from ..errors import RecordError
from ..metrics import get_metrics
from ..naming import service_prefix
from ..node import Node
from ..snapshot import Change, Snapshot, apply_changes, snapshot_from_kvs
from .etcd import (
    AsyncEtcdClient,
    AuthError,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    WatchResponse,
)

__all__ = ["Changes", "Resync", "follow", "read_nodes", "watch_snapshots"]

log = logging.getLogger("grpc_etcd.watcher")

# A watch that cannot be re-established is retried up to every few seconds.
_RETRY_BASE = 0.1
_RETRY_CAP = 5.0


class _Warner:
    """One warning per bad key, until that key is good again or deleted."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def report(self, errors: list[RecordError], snapshot: Snapshot, deleted: set[str]) -> None:
        for error in errors:
            if error.key not in self._warned:
                self._warned.add(error.key)
                log.warning("skipping %s", error)
        bad_now = {error.key for error in errors}
        self._warned -= {key for key in self._warned if key in deleted}
        self._warned -= {
            node.key for node in (*snapshot.added, *snapshot.updated) if node.key not in bad_now
        }


def _decode_key(key: bytes) -> str:
    return key.decode("utf-8", "replace")


async def read_nodes(client: AsyncEtcdClient, service: str, root: str = "") -> list[Node]:
    """The nodes registered now (one read); bad records are skipped with a warning each."""
    kvs, revision = await client.get_prefix(service_prefix(service, root))
    snapshot, errors = snapshot_from_kvs(
        service, ((_decode_key(kv.key), kv.value) for kv in kvs), revision
    )
    for error in errors:
        log.warning("skipping %s", error)
    return list(snapshot.nodes.values())


@dataclass(frozen=True, slots=True)
class Resync:
    """A full read: every key-value there is, at ``revision``."""

    kvs: list[tuple[str, bytes]]
    revision: int


@dataclass(frozen=True, slots=True)
class Changes:
    """The changes of one watch response after the last read, at ``revision``."""

    changes: list[Change]
    revision: int


async def _watch_then_read(
    client: AsyncEtcdClient, key: str, prefix: bool
) -> tuple[AsyncGenerator[WatchResponse, None], Resync]:
    """Open a watch from now, wait until etcd has created it, then read: the watch (close it
    with ``aclose()``) and the read."""
    watch = client.watch(key, prefix=prefix, created_notify=True)
    try:
        try:
            async with asyncio.timeout(client.timeout):
                created = await anext(watch)
        except TimeoutError:
            raise EtcdUnavailableError(
                f"no watch of {key} created within {client.timeout:g} s",
                endpoints=client.endpoints,
            ) from None
        assert created.created
        # one key is read as one key: a role may read it and nothing that starts like it
        kvs, revision = await client.read(key, prefix=prefix)
    except BaseException:
        await watch.aclose()
        raise
    return watch, Resync([(_decode_key(kv.key), kv.value) for kv in kvs], revision)


async def follow(
    client: AsyncEtcdClient,
    key: str,
    *,
    prefix: bool,
    keeping: str,
    on_error: Callable[[Exception], None] | None = None,
) -> AsyncGenerator[Resync | Changes, None]:
    """A key (or every key under it with ``prefix=True``), gap-free: a ``Resync`` first, then
    ``Changes`` as they come; after a compaction or a failure, another ``Resync`` (with
    backoff). ``keeping`` says what stands meanwhile, in the warnings. Ends when the consumer
    closes it or the etcd client is closed."""
    backoff = Backoff(_RETRY_BASE, _RETRY_CAP)
    refusal = ""  # the refusal warned about, until a read succeeds or etcd says another
    while not client.closed:
        try:
            watch, resync = await _watch_then_read(client, key, prefix)
        except (EtcdError, StopAsyncIteration) as exc:
            if client.closed:
                return
            if on_error is not None:  # a read failed: a channel without nodes fails fast
                on_error(exc)
            delay = backoff.next_delay()
            if not isinstance(exc, AuthError):
                log.warning(
                    "cannot read %s (%s); keeping %s, retry in %.1fs", key, exc, keeping, delay
                )
            elif str(exc) != refusal:  # a permission changes rarely: once, not every retry
                refusal = str(exc)
                log.warning("%s; keeping %s, retrying until it is granted", exc, keeping)
            await asyncio.sleep(delay)
            continue
        if refusal:
            log.info("%s can be read again", key)
            refusal = ""
        async with contextlib.aclosing(watch):
            yield resync
            try:
                async for response in watch:
                    changes = [
                        Change(event.type, _decode_key(event.kv.key), event.kv.value)
                        for event in response.events
                        if event.kv.mod_revision > resync.revision  # else it is in the read
                    ]
                    if changes:
                        backoff.reset()
                        yield Changes(changes, response.revision)
            except CompactedError as exc:
                log.info(
                    "watch of %s fell behind compaction at revision %d; reading again",
                    key,
                    exc.compact_revision,
                )
            except EtcdError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "watch of %s failed (%s); keeping %s, retry in %.1fs", key, exc, keeping, delay
                )
                await asyncio.sleep(delay)


def watch_snapshots(
    client: AsyncEtcdClient,
    service: str,
    root: str = "",
    *,
    allow: Iterable[str | Network] | AllowList | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> AsyncGenerator[Snapshot, None]:
    """Snapshots of ``service``: the full set first, then one per change.

    ``allow``: IP networks (``["10.0.0.0/8", "127.0.0.1/32"]``, see ``grpc_etcd.allowlist``);
    a record whose address is outside all of them is ignored with one warning naming its key.
    Checked at once (``ValueError``). ``on_error`` hears every failed read of the nodes. Runs
    until the consumer closes it or the etcd client is closed.
    """
    return _watch_snapshots(client, service, root, allow_list(allow), on_error)


async def _watch_snapshots(
    client: AsyncEtcdClient,
    service: str,
    root: str,
    allow: AllowList | None,
    on_error: Callable[[Exception], None] | None,
) -> AsyncGenerator[Snapshot, None]:
    warner = _Warner()
    snapshot: Snapshot | None = None
    updates = follow(
        client,
        service_prefix(service, root),
        prefix=True,
        keeping="the last nodes",
        on_error=on_error,
    )
    async with contextlib.aclosing(updates):
        async for update in updates:
            first = snapshot is None
            if isinstance(update, Resync):
                if not first:
                    get_metrics().resynced(service)
                snapshot, errors = snapshot_from_kvs(
                    service, update.kvs, update.revision, snapshot, allow=allow
                )
                deleted = {node.key for node in snapshot.removed}
            else:
                assert snapshot is not None
                snapshot, errors = apply_changes(
                    snapshot, update.changes, update.revision, allow=allow
                )
                deleted = {c.key for c in update.changes if c.type == "delete"}
            warner.report(errors, snapshot, deleted)
            if first or snapshot.changed:
                yield snapshot
