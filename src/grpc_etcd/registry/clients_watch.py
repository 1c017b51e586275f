"""A channel's own client key and its view of the others (asyncio core; docs/scale.md).

The key is a :class:`~grpc_etcd.registry.registration.LeasedKey`: written on a lease of its
own, kept alive, written again after a lost lease or a deletion, for as long as it is open;
gone when the channel closes (deleted, lease revoked) or within its TTL when the process dies.
The others are followed with discovery's gap-free loop (watch, then read; a compaction or a
broken watch reads again; while etcd is unreachable the last view stands).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator

from ..clients import Client, ClientTracker, ClientView, client_key, clients_prefix, encode_client
from .etcd import AsyncEtcdClient
from .registration import LeasedKey
from .watcher import Resync, follow

__all__ = ["CLIENT_TTL", "ClientKey", "watch_clients"]

log = logging.getLogger("grpc_etcd.clients")

#: The lease TTL of a client key (seconds): how long a dead process still counts as a client.
CLIENT_TTL = 10


class ClientKey(LeasedKey):
    """One channel's key under ``/grpc-etcd/clients/<service>/`` (asyncio), its labels in the
    value. ``keep()`` it on the loop; ``close()`` deletes it and revokes its lease."""

    _KIND = "client key"

    def __init__(
        self,
        client: AsyncEtcdClient,
        service: str,
        own: Client,
        *,
        root: str = "",
        ttl: int = CLIENT_TTL,
    ) -> None:
        super().__init__(
            client,
            client_key(service, own.id, root),
            encode_client(own.labels),
            ttl=ttl,
            service=service,
        )
        self.own = own

    def keep(self) -> ClientKey:
        """Write the key in the background, with backoff until etcd takes it, and keep it up
        for as long as it is open (call on the event loop; never raises for etcd's sake)."""
        self._check_open()
        if self._task is None:
            self._spawn()
        return self


async def watch_clients(
    client: AsyncEtcdClient, service: str, own: Client, root: str = ""
) -> AsyncGenerator[ClientView, None]:
    """The clients of ``service`` as ``own`` sees them: a view after the first read, then one
    per change of the clients (ids or labels). Bad keys are logged once each (see
    :class:`~grpc_etcd.clients.ClientTracker`). Runs until closed or the client closes."""
    prefix = clients_prefix(service, root)
    tracker = ClientTracker(prefix, own)
    updates = follow(client, prefix, prefix=True, keeping="the last view of the clients")
    async with contextlib.aclosing(updates):
        async for update in updates:
            before = tracker.view
            if isinstance(update, Resync):
                warnings = tracker.resync(update.kvs, update.revision)
            else:
                warnings = tracker.apply(update.changes, update.revision)
            for warning in warnings:
                log.warning("%s", warning)
            if not before.known or tracker.view.clients != before.clients:
                yield tracker.view
