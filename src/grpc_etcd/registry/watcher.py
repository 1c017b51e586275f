"""Discovery: read a service's prefix, then watch it from the next revision (asyncio core).

The idiom of etcd's ``client/v3/naming``: read at revision R, watch from R + 1, so no change
between the two is lost (the Go original watches from "now"). The etcd client resumes a
broken watch from the last revision it delivered; what reaches us here is a compaction (read
again and publish the difference) or a hard failure (read again with backoff). Meanwhile the
last snapshot stands: an unreachable etcd never empties the node set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ..backoff import Backoff
from ..errors import RecordError
from ..metrics import get_metrics
from ..naming import service_prefix
from ..node import Node
from ..snapshot import Change, Snapshot, apply_changes, snapshot_from_kvs
from .etcd import AsyncEtcdClient, CompactedError, EtcdError

__all__ = ["read_nodes", "watch_snapshots"]

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
            kvs, revision = await client.get_prefix(prefix)
        except EtcdError as exc:
            if client.closed:
                return
            delay = backoff.next_delay()
            log.warning(
                "cannot read %s (%s); keeping the last nodes, retry in %.1fs", prefix, exc, delay
            )
            await asyncio.sleep(delay)
            continue
        first = snapshot is None
        if not first:
            get_metrics().resynced(service)
        snapshot, errors = snapshot_from_kvs(
            service, ((_decode_key(kv.key), kv.value) for kv in kvs), revision, snapshot
        )
        warner.report(errors, snapshot, {node.key for node in snapshot.removed})
        if first or snapshot.changed:
            yield snapshot
        try:
            async for response in client.watch(prefix, prefix=True, start_revision=revision + 1):
                changes = [
                    Change(event.type, _decode_key(event.kv.key), event.kv.value)
                    for event in response.events
                ]
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
