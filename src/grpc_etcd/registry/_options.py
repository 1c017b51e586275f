"""Defaults of the registry facades; the argument checks live in ``grpc_etcd.node`` (pure),
for ``register()`` and ``Registration.update()`` alike, and are re-exported here."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..node import Methods, build_node

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINTS_ENV", "Methods", "build_node", "endpoints_or_default"]

#: Where a Registry (and the CLI) looks for etcd when told nothing: etcd's own default.
DEFAULT_ENDPOINT = "127.0.0.1:2379"
#: The environment variable naming the etcd endpoints (comma-separated), for Registry and CLI.
ENDPOINTS_ENV = "GRPC_ETCD_ENDPOINTS"


def endpoints_or_default(endpoints: str | Sequence[str] | None) -> str | Sequence[str]:
    """``endpoints`` if given, else ``$GRPC_ETCD_ENDPOINTS``, else ``127.0.0.1:2379``."""
    if endpoints is not None:
        return endpoints
    return os.environ.get(ENDPOINTS_ENV, "").strip() or DEFAULT_ENDPOINT
