"""route(), the x-version metadata and the order in which a call's version is chosen."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from grpc_etcd import current_route, route
from grpc_etcd.routing import (
    CallInfo,
    CallRouter,
    _reset_propagated,
    _set_propagated,
    route_from_metadata,
)


def version(
    router: CallRouter, metadata: list[tuple[str, str | bytes]] | None = None
) -> str | None:
    return router.resolve(metadata, None)[0].version


def test_precedence_call_metadata_then_route_then_channel_then_propagated() -> None:
    """ROUTING.md step 3: the nearest word wins."""
    channel_v3 = CallRouter("/m", "v3")
    plain = CallRouter("/m", None)
    token = _set_propagated({"version": "v2"})  # what propagate_route() does in a handler
    try:
        assert version(plain) == "v2", "propagated: the only word"
        assert version(channel_v3) == "v3", "app v2 calls user v3 inside a call chain"
        with route(version="v4"):
            assert version(channel_v3) == "v4", "a route() block beats the channel"
            assert version(channel_v3, [("x-version", "v5")]) == "v5", "the call beats all"
            assert version(channel_v3, [("x-version", b"v6")]) == "v6"
        assert current_route() == {"version": "v2"}, "handlers still see what came in"
    finally:
        _reset_propagated(token)
    assert version(plain) is None
    assert current_route() == {}


def test_propagated_version_is_sent_on_and_route_values_layer_over_it() -> None:
    token = _set_propagated({"version": "v2"})
    try:
        with route(zone="a"):
            info, out = CallRouter("/m", None).resolve([("k", "1")], None)
            assert current_route() == {"version": "v2", "zone": "a"}
    finally:
        _reset_propagated(token)
    assert info.version == "v2"
    assert dict(info.route) == {"version": "v2", "zone": "a"}
    assert out == (("k", "1"), ("x-version", "v2"))
    assert info.metadata == out, "the picker sees the outgoing metadata"


def test_call_info_carries_the_calls_metadata() -> None:
    info, out = CallRouter("/pkg.S/M", None).resolve([("x-user-tier", "beta")], True)
    assert info == CallInfo("/pkg.S/M", None, {}, True, (("x-user-tier", "beta"),))
    assert out == [("x-user-tier", "beta")], "nothing implied: the metadata is passed as it is"
    assert CallRouter("/m", None).resolve(None, None)[0].metadata == ()


def test_route_from_metadata_uses_the_table() -> None:
    assert route_from_metadata([("x-version", b"v1"), ("other", "x")]) == {"version": "v1"}
    assert route_from_metadata([("x-version", "")]) == {}
    assert route_from_metadata(None) == {}


def test_route_nests_and_restores() -> None:
    with route(version="v1", zone="a"):
        with route(zone="b"):
            assert current_route() == {"version": "v1", "zone": "b"}
        assert current_route() == {"version": "v1", "zone": "a"}
    assert current_route() == {}


def test_route_follows_asyncio_tasks_separately() -> None:
    router = CallRouter("/m", None)

    async def in_task(wanted: str) -> str | None:
        with route(version=wanted):
            await asyncio.sleep(0)
            return version(router)

    async def main() -> list[str | None]:
        return list(await asyncio.gather(in_task("v1"), in_task("v2")))

    assert asyncio.run(main()) == ["v1", "v2"]


def test_propagated_values_stay_in_their_context() -> None:
    context = contextvars.copy_context()
    context.run(_set_propagated, {"version": "v9"})
    assert context.run(current_route) == {"version": "v9"}
    assert current_route() == {}


def test_bad_route_values() -> None:
    with pytest.raises(ValueError, match="version"), route(version=""):
        pass
    with pytest.raises(TypeError, match="zone"), route(zone=3):  # type: ignore[arg-type]
        pass
