"""Where a Registry looks for etcd when told nothing: $GRPC_ETCD_ENDPOINTS, else 127.0.0.1:2379."""

from __future__ import annotations

import pytest

import grpc_etcd
import grpc_etcd.aio


def test_sync_registry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_ETCD_ENDPOINTS", "127.0.0.5:23790,127.0.0.6:23791")
    with grpc_etcd.Registry() as registry:
        assert registry.client.endpoints == ("127.0.0.5:23790", "127.0.0.6:23791")


async def test_aio_registry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_ETCD_ENDPOINTS", "127.0.0.5:23790")
    async with grpc_etcd.aio.Registry() as registry:
        assert registry.client.endpoints == ("127.0.0.5:23790",)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_without_the_environment_it_is_etcds_default(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("GRPC_ETCD_ENDPOINTS", raising=False)
    else:
        monkeypatch.setenv("GRPC_ETCD_ENDPOINTS", value)
    with grpc_etcd.Registry() as registry:
        assert registry.client.endpoints == ("127.0.0.1:2379",)


def test_given_endpoints_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_ETCD_ENDPOINTS", "127.0.0.5:23790")
    with grpc_etcd.Registry("127.0.0.7:2379") as registry:
        assert registry.client.endpoints == ("127.0.0.7:2379",)
