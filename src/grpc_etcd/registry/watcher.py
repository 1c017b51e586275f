"""Discovery: watch a service's prefix, then read it, gap-free (asyncio core).

The watch is opened first (from "now") and, once etcd has created it, the prefix is read at
revision R; events at or below R are already in the read and are dropped. So no change is lost
and none waits: a watch created from a past revision (read, then watch from R + 1, etcd's
``client/v3/naming`` idiom) is "unsynced" in etcd and gets a change made in between only from
etcd's 100 ms sync loop. The etcd client resumes a broken watch from the last revision it
delivered; what reaches us here is a compaction (watch and read again, publish the difference)
or a hard failure (the same, with backoff). Meanwhile the last snapshot stands: an unreachable
etcd never empties the node set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from ..backoff import Backoff
from ..errors import RecordError
from ..metrics import get_metrics
from ..naming import service_prefix
from ..node import Node
from ..snapshot import Change, Snapshot, apply_changes, snapshot_from_kvs
from .etcd import (
    AsyncEtcdClient,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    WatchResponse,
)

__all__ = ["read_nodes", "watch_snapshots", "watch_then_read"]

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


async def watch_then_read(
    client: AsyncEtcdClient, prefix: str
) -> tuple[AsyncGenerator[WatchResponse, None], list[tuple[str, bytes]], int]:
    """Open a watch of ``prefix`` from now, wait until etcd has created it, then read the
    prefix: the watch (close it with ``aclose()``), the key-values read and the read's revision.
    Drop the watch's events at or below that revision (they are in the read)."""
    watch = client.watch(prefix, prefix=True, created_notify=True)
    try:
        try:
            async with asyncio.timeout(client.timeout):
                created = await anext(watch)
        except TimeoutError:
            raise EtcdUnavailableError(
                f"no watch of {prefix} created within {client.timeout:g} s",
                endpoints=client.endpoints,
            ) from None
        assert created.created
        kvs, revision = await client.get_prefix(prefix)
    except BaseException:
        await watch.aclose()
        raise
    return watch, [(_decode_key(kv.key), kv.value) for kv in kvs], revision


async def watch_snapshots(
    client: AsyncEtcdClient, service: str, root: str = ""
) -> AsyncIterator[Snapshot]:
    """Snapshots of ``service``: the full set first, then one per change.

    Runs until the consumer closes it or the etcd client is closed.
    """
    prefix = service_prefix(service, root)
    warner = _Warner()
    backoff = Backoff(_RETRY_BASE, _RETRY_CAP)
    snapshot: Snapshot | None = None
    while not client.closed:
        try:
            watch, kvs, revision = await watch_then_read(client, prefix)
        except (EtcdError, StopAsyncIteration) as exc:
            if client.closed:
                return
            delay = backoff.next_delay()
            log.warning(
                "cannot read %s (%s); keeping the last nodes, retry in %.1fs", prefix, exc, delay
            )
            await asyncio.sleep(delay)
            continue
        async with contextlib.aclosing(watch):
            first = snapshot is None
            if not first:
                get_metrics().resynced(service)
            snapshot, errors = snapshot_from_kvs(service, kvs, revision, snapshot)
            warner.report(errors, snapshot, {node.key for node in snapshot.removed})
            if first or snapshot.changed:
                yield snapshot
            try:
                async for response in watch:
                    changes = [
                        Change(event.type, _decode_key(event.kv.key), event.kv.value)
                        for event in response.events
                        if event.kv.mod_revision > revision
                    ]
                    if not changes:
                        continue
                    snapshot, errors = apply_changes(snapshot, changes, response.revision)
                    deleted = {c.key for c in changes if c.type == "delete"}
                    warner.report(errors, snapshot, deleted)
                    backoff.reset()
                    if snapshot.changed:
                        yield snapshot
            except CompactedError as exc:
                log.info(
                    "watch of %s fell behind compaction at revision %d; reading again",
                    prefix,
                    exc.compact_revision,
                )
            except EtcdError as exc:
                delay = backoff.next_delay()
                log.warning(
                    "watch of %s failed (%s); keeping the last nodes, retry in %.1fs",
                    prefix,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
