"""route(), the x-version metadata and the order in which a call's version is chosen."""

from __future__ import annotations

import asyncio

import pytest

from grpc_etcd import current_route, route
from grpc_etcd.routing import call_version


def test_order_metadata_then_route_then_default() -> None:
    assert call_version(None, "v9") == "v9"
    with route(version="v1"):
        assert call_version(None, "v9") == "v1"
        assert call_version([("x-version", "v2")], "v9") == "v2"
        assert call_version([("x-version", b"v3")]) == "v3"
    assert call_version(None) is None


def test_route_nests_and_restores() -> None:
    with route(version="v1", zone="a"):
        with route(zone="b"):
            assert current_route() == {"version": "v1", "zone": "b"}
        assert current_route() == {"version": "v1", "zone": "a"}
    assert current_route() == {}


def test_route_follows_asyncio_tasks_separately() -> None:
    async def in_task(version: str) -> str | None:
        with route(version=version):
            await asyncio.sleep(0)
            return call_version(None)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(in_task("v1"), in_task("v2")))

    assert asyncio.run(main()) == ["v1", "v2"]


def test_bad_route_values() -> None:
    with pytest.raises(ValueError, match="version"), route(version=""):
        pass
    with pytest.raises(TypeError, match="zone"), route(zone=3):  # type: ignore[arg-type]
        pass
