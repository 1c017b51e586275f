"""A closed Registry (either twin) refuses every use with ClosedError naming it."""

from __future__ import annotations

import pytest

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.errors import ClosedError

SERVICE = "test.srv.closed"


def test_sync_registry_refuses_use_after_close() -> None:
    registry = grpc_etcd.Registry("127.0.0.1:1")
    registry.close()
    uses = [
        lambda: registry.nodes(SERVICE),
        lambda: registry.watch(SERVICE),
        lambda: registry.channel(SERVICE),
        lambda: registry.register(SERVICE, address="127.0.0.1:5000"),
    ]
    for use in uses:
        with pytest.raises(ClosedError, match="this Registry is closed"):
            use()
    registry.close()  # idempotent


async def test_aio_registry_refuses_use_after_close() -> None:
    registry = grpc_etcd.aio.Registry("127.0.0.1:1")
    await registry.close()
    with pytest.raises(ClosedError, match="this Registry is closed"):
        await registry.nodes(SERVICE)
    with pytest.raises(ClosedError, match="this Registry is closed"):
        registry.channel(SERVICE)
    with pytest.raises(ClosedError, match="this Registry is closed"):
        await registry.register(SERVICE, address="127.0.0.1:5000")
