"""A service's config key, read then watched from the next revision (asyncio).

Yields the config in force: the first read at once (``None`` when the key is absent), then one
per change. A document that does not validate is skipped with a warning naming the key and the
fault, and the last good one stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ..backoff import Backoff
from ..config import ServiceConfig, config_key, parse_config
from ..errors import ConfigError
from ..registry.etcd import AsyncEtcdClient, CompactedError, EtcdError

__all__ = ["watch_service_config"]

log = logging.getLogger("grpc_etcd.xds")


def _parse(value: bytes, key: str, last: ServiceConfig | None) -> ServiceConfig | None:
    try:
        return parse_config(value, key=key)
    except ConfigError as exc:
        log.warning("%s; keeping the last good config", exc)
        return last


async def watch_service_config(
    client: AsyncEtcdClient, service: str, root: str = ""
) -> AsyncIterator[ServiceConfig | None]:
    """The service's config from etcd, first as read, then as it changes."""
    key = config_key(service, root)
    backoff = Backoff(0.1, 5.0)
    config: ServiceConfig | None = None
    first = True
    while not client.closed:
        try:
            # A prefix read returns the store revision, to watch from (get() does not).
            kvs, revision = await client.get_prefix(key)
        except EtcdError as exc:
            if client.closed:
                return
            await asyncio.sleep(backoff.next_delay())
            log.warning("cannot read %s (%s); retrying", key, exc)
            continue
        value = next((kv.value for kv in kvs if kv.key == key.encode()), None)
        new = None if value is None else _parse(value, key, config)
        if first or new != config:
            config, first = new, False
            yield config
        try:
            async for response in client.watch(key, start_revision=revision + 1):
                for event in response.events:
                    new = None if event.type == "delete" else _parse(event.kv.value, key, config)
                    if new != config:
                        config = new
                        yield config
                backoff.reset()
        except CompactedError:
            continue
        except EtcdError as exc:
            log.warning("watch of %s failed (%s); reading again", key, exc)
            await asyncio.sleep(backoff.next_delay())
