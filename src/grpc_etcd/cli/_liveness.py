"""Whether etcd answers, asked once a second beside a long-running command (``watch``).

The watch itself retries quietly through an outage, so without this a view can be stale for
minutes with nothing said. ``Liveness`` reports each change once: one call when etcd stops
answering, one when it answers again. While etcd is known to be down, the library's own
retry warnings are held back: the one line already said it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._closing import OpenClosing
from ._common import one_line

if TYPE_CHECKING:
    from ..registry.etcd import EtcdClient

__all__ = ["PROBE_INTERVAL", "Liveness"]

#: Seconds between two probes; a probe waits at most ``PROBE_TIMEOUT`` for an answer.
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


class Liveness(OpenClosing, logging.Filter):
    """Probes ``client`` until closed; ``on_change(error)`` gets ``None`` when etcd is back."""

    def __init__(self, client: EtcdClient, on_change: Callable[[str | None], None]) -> None:
        super().__init__()
        self._client = client
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-etcd-liveness", daemon=True)
        self._lock = threading.Lock()
        self._answers = 0  # counts answered(): a probe that failed before one is out of date
        self.down = False

    def probe(self) -> None:
        """Ask etcd once; report a change of state."""
        from ..registry.etcd import EtcdError

        answers = self._answers
        try:
            self._client.status(timeout=PROBE_TIMEOUT)
        except (EtcdError, OSError, TimeoutError) as exc:
            error: str | None = one_line(exc)
        else:
            error = None
        with self._lock:
            if error is not None and answers != self._answers:
                return  # etcd answered the watch meanwhile
            self._set(error)

    def answered(self) -> None:
        """etcd just answered (the watch delivered a change): it is up, whatever a probe says."""
        with self._lock:
            self._answers += 1
            self._set(None)

    def _set(self, error: str | None) -> None:
        if (error is not None) != self.down:
            self.down = error is not None
            self._on_change(error)

    def filter(self, record: logging.LogRecord) -> bool:
        """Hold back grpc_etcd's warnings while etcd is known to be down."""
        return not (self.down and record.name.startswith("grpc_etcd") and record.levelno <= 30)

    def _run(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL):
            self.probe()

    def _open(self) -> None:  # what ``with`` starts
        self.probe()
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        self._thread.start()

    def close(self) -> None:
        """Stop probing and let the library's warnings through again."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(PROBE_TIMEOUT + PROBE_INTERVAL)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
