"""The pure pieces both BalancedChannels share: what a call asks for, the node set bookkeeping."""

from __future__ import annotations

import grpc

from grpc_etcd import Node, Snapshot, route
from grpc_etcd._channel._base import (
    aggregate_state,
    build_endpoints,
    plan_update,
    sub_wait_for_ready,
)
from grpc_etcd._channel._subchannel import Subchannel
from grpc_etcd.policies.base import ConnState
from grpc_etcd.routing import CallRouter


def test_version_from_metadata_is_kept_and_not_repeated() -> None:
    router = CallRouter("/m", "v9")
    metadata = [("a", "1"), ("x-version", "v1")]
    with route(version="v2"):
        info, out = router.resolve(metadata, None)
    assert info.version == "v1" and out is metadata


def test_implied_version_is_added_to_the_metadata() -> None:
    router = CallRouter("/m", "v9")
    info, out = router.resolve(None, None)
    assert info.version == "v9" and list(out) == [("x-version", "v9")]
    with route(version="v2"):
        info, out = router.resolve([("a", "1")], True)
    assert info.version == "v2" and info.wait_for_ready
    assert list(out) == [("a", "1"), ("x-version", "v2")]
    assert info.route == {"version": "v2"}


def test_no_version_anywhere_sends_none() -> None:
    info, out = CallRouter("/m", None).resolve(None, None)
    assert info.version is None and out is None
    info, out = CallRouter("/m", None).resolve([("x-version", b"v3")], None)
    assert info.version == "v3"


def test_call_info_follows_metadata_route_and_default() -> None:
    router = CallRouter("/m", None)
    plain, _ = router.resolve(None, None)
    with route(version="v1"):
        routed, _ = router.resolve(None, None)
        with route(zone="a"):
            zoned, _ = router.resolve(None, None)
        from_metadata, _ = router.resolve([("x-version", "v2")], None)
    assert (plain.version, dict(plain.route)) == (None, {})
    assert (routed.version, dict(routed.route)) == ("v1", {"version": "v1"})
    assert dict(zoned.route) == {"version": "v1", "zone": "a"}
    assert (from_metadata.version, dict(from_metadata.route)) == ("v2", {"version": "v1"})
    assert router.resolve(None, True)[0].wait_for_ready
    assert CallRouter("/m", "v9").resolve(None, None)[0].version == "v9"


def test_metadata_cache_stays_bounded() -> None:
    router = CallRouter("/m", None)
    for i in range(2000):
        with route(version=f"v{i}"):
            info, out = router.resolve(None, None)
        assert info.version == f"v{i}" and list(out) == [("x-version", f"v{i}")]
    assert len(router._tags) <= 256


def _nodes(*pairs: tuple[str, str, str]) -> Snapshot:
    return Snapshot("s", {f"/s/{k}": Node("s", k, address, v) for k, address, v in pairs}, 1)


def test_plan_update_keys_connections_by_address() -> None:
    snap = _nodes(("a", "h:1", "v1"), ("b", "h:1", "v2"), ("c", "h:2", "v1"))
    assert plan_update(snap, {}) == (["h:1", "h:2"], [])
    assert plan_update(snap, {"h:1": 1, "h:3": 3}) == (["h:2"], ["h:3"])


def test_every_node_is_an_endpoint_even_when_sharing_an_address() -> None:
    snap = _nodes(("a", "h:1", "v1"), ("b", "h:1", "v2"), ("c", "h:9", "v1"))
    sub = Subchannel("h:1", object())
    sub.state = ConnState.TRANSIENT_FAILURE
    endpoints = build_endpoints(snap, {"h:1": sub})
    assert [(e.node.id, e.subchannel) for e in endpoints] == [("a", sub), ("b", sub)]
    assert endpoints[0].error == "failed to connect to h:1 (TRANSIENT_FAILURE)"
    assert build_endpoints(None, {"h:1": sub}) == []


def test_aggregate_state() -> None:
    ready, failing = ConnState.READY, ConnState.TRANSIENT_FAILURE
    assert (
        aggregate_state([], has_snapshot=False, closed=False) == grpc.ChannelConnectivity.CONNECTING
    )
    assert (
        aggregate_state([failing, ready], has_snapshot=True, closed=False)
        == grpc.ChannelConnectivity.READY
    )
    assert (
        aggregate_state([failing, ConnState.IDLE], has_snapshot=True, closed=False)
        == grpc.ChannelConnectivity.IDLE
    )
    assert (
        aggregate_state([failing], has_snapshot=True, closed=False)
        == grpc.ChannelConnectivity.TRANSIENT_FAILURE
    )
    assert (
        aggregate_state([], has_snapshot=True, closed=False)
        == grpc.ChannelConnectivity.TRANSIENT_FAILURE
    )
    assert (
        aggregate_state([ready], has_snapshot=True, closed=True)
        == grpc.ChannelConnectivity.SHUTDOWN
    )


def test_each_endpoint_says_since_when_its_node_is_ready_and_serving() -> None:
    snap = _nodes(("a", "h:1", "v1"), ("b", "h:1", "v2"), ("c", "h:2", "v1"))
    one, two = Subchannel("h:1", object()), Subchannel("h:2", object())
    one.state = ConnState.READY
    clock = [10.0]
    reuse: dict[str, object] = {}
    first = build_endpoints(snap, {"h:1": one, "h:2": two}, reuse=reuse, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert [e.ready_since for e in first] == [10.0, 10.0, None], "per connection, not per node"
    clock[0] = 12.0
    two.state = ConnState.READY
    again = build_endpoints(snap, {"h:1": one, "h:2": two}, reuse=reuse, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert [e.ready_since for e in again] == [10.0, 10.0, 12.0]
    assert again[0] is first[0], "unchanged facts: the same endpoint"
    one.state = ConnState.TRANSIENT_FAILURE
    build_endpoints(snap, {"h:1": one, "h:2": two}, clock=lambda: clock[0])
    one.state = ConnState.READY
    clock[0] = 20.0
    back = build_endpoints(snap, {"h:1": one, "h:2": two}, clock=lambda: clock[0])
    assert back[0].ready_since == 20.0, "READY again after a failure: warming again"


def test_attempts_tell_a_node_not_to_wait_for_ready_only_where_a_service_config_could() -> None:
    # grpc's default (None) never waits unless a grpc service config says waitForReady; only
    # the options can bring one to a sub-channel: then the attempts say False outright.
    assert sub_wait_for_ready(()) is None
    assert sub_wait_for_ready([("grpc.max_receive_message_length", 1)]) is None
    assert sub_wait_for_ready([("grpc.service_config_disable_resolution", 1)]) is None
    assert sub_wait_for_ready([("grpc.service_config", "{}")]) is False
    assert sub_wait_for_ready([("grpc.service_config_disable_resolution", 0)]) is False
