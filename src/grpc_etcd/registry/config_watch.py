"""A service's config document, live from etcd (asyncio core).

The key ``config_key(service, root)`` is followed as discovery follows the nodes (watch first,
then read; gap-free). What the consumer sees:

- the document in force first: a ``ServiceConfig``, or ``None`` when there is none (or the one
  stored does not validate): the code's own config applies;
- then one value per change of the document in force: a new valid document, or ``None`` when
  it is deleted;
- a document that does not validate is skipped with ONE warning naming the key and the fault;
  the last good one stays in force;
- while etcd is unreachable nothing is yielded: the last value stays.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from ..config import ServiceConfig, config_key, parse_config
from ..errors import ConfigError
from .etcd import AsyncEtcdClient
from .watcher import Resync, follow

__all__ = ["ConfigTracker", "watch_config"]

log = logging.getLogger("grpc_etcd.config")


class ConfigTracker:
    """The pure part: given each value of the key (``None`` = absent), what is in force and
    whether it changed. Warns once per invalid value."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.current: ServiceConfig | None = None
        self._current_raw: bytes | None = None
        self._refused: bytes | None = None  # the invalid value already warned about
        self._started = False

    def offer(self, raw: bytes | None) -> bool:
        """Take the key's value; True when the config in force changed (or on the first call)."""
        first, self._started = not self._started, True
        if raw is None:
            self._refused = None
            changed = self._current_raw is not None
            self.current, self._current_raw = None, None
            return first or changed
        if raw == self._current_raw:
            return first
        try:
            config = parse_config(raw, key=self.key)
        except ConfigError as exc:
            if raw != self._refused:
                self._refused = raw
                log.warning("ignoring %s; keeping the last good config", exc)
            return first
        self._refused = None
        changed = config != self.current
        self.current, self._current_raw = config, raw
        return first or changed


async def watch_config(
    client: AsyncEtcdClient,
    service: str,
    root: str = "",
    *,
    on_error: Callable[[Exception], None] | None = None,
) -> AsyncIterator[ServiceConfig | None]:
    """The config of ``service`` from etcd: the one in force first, then one per change
    (``None``: no valid document, use the code's config). See the module docstring.
    ``on_error`` hears every failed read of the key."""
    key = config_key(service, root)
    tracker = ConfigTracker(key)
    updates = follow(client, key, prefix=False, keeping="the last config", on_error=on_error)
    async with contextlib.aclosing(updates):
        async for update in updates:
            if isinstance(update, Resync):
                raw = update.kvs[0][1] if update.kvs else None
                if tracker.offer(raw):
                    yield tracker.current
                continue
            changed = False
            for change in update.changes:  # the last one wins; each is offered to warn once
                value = None if change.type == "delete" else change.value
                changed = tracker.offer(value) or changed
            if changed:
                yield tracker.current
