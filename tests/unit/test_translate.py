"""The pure translation: etcd snapshot + service config -> xDS resources (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from grpc_etcd.config import parse_config
from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.snapshot import Snapshot
from grpc_etcd.xds import ServiceState, Translation
from grpc_etcd.xds.names import cluster_name, parse_cluster_name
from grpc_etcd.xds.translate import CDS, EDS, LDS, RDS

SERVICE = "hw.srv.app"


def node(i: int, version: str, offline: tuple[str, ...] = (), **metadata: str) -> Node:
    key = f"/hw/srv/app/n{i}"
    methods = {name: MethodInfo(online=False) for name in offline}
    return Node(SERVICE, f"n{i}", f"127.0.0.1:{9000 + i}", version, metadata, methods, key=key)


def translation(nodes: list[Node], config: dict[str, Any] | None = None) -> Translation:
    snapshot = Snapshot(SERVICE, {n.key: n for n in nodes}, revision=7)
    return Translation(ServiceState.of(snapshot, parse_config(config or {})))


def routes(t: Translation, source: dict[str, str] | None = None) -> list[Any]:
    return list(t.route_configuration(source or {}).virtual_hosts[0].routes)


def target(route: Any) -> dict[str, int]:
    """The clusters of a route with their weights."""
    action = route.route
    if action.cluster:
        return {action.cluster: 1}
    return {c.name: c.weight.value for c in action.weighted_clusters.clusters}


def headers(route: Any) -> dict[str, str]:
    return {
        h.name: (h.string_match.exact if h.HasField("string_match") else "<present>")
        for h in route.match.headers
    }


def test_cluster_names_round_trip() -> None:
    for subset in ({}, {"version": "v1"}, {"zone": "a,b=c", "version": "v|1!"}, None):
        for method in ("", "ApiTest", "/proto.Api/ApiTest"):
            name = cluster_name(SERVICE, subset, method)
            assert parse_cluster_name(name) == (SERVICE, subset, method)
    assert cluster_name(SERVICE, {"version": "v1", "a": "x"}) == f"{SERVICE}|a=x,version=v1"
    with pytest.raises(ValueError, match="not a grpc-etcd cluster name"):
        parse_cluster_name("plain")
    with pytest.raises(ValueError, match="bad selector part"):
        parse_cluster_name(f"{SERVICE}|novalue")


def test_listener_is_the_service_with_rds_and_the_router_filter() -> None:
    listener = translation([node(1, "v1")]).listener()
    assert listener.name == SERVICE
    manager = pytest.importorskip(
        "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2"
    ).HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == SERVICE
    assert manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_no_config_pinned_versions_then_unknown_then_every_node() -> None:
    t = translation([node(1, "v1"), node(2, "v2"), node(3, "v1")])
    table = routes(t)
    assert [(headers(r), target(r)) for r in table] == [
        ({"x-version": "v1"}, {f"{SERVICE}|version=v1": 1}),
        ({"x-version": "v2"}, {f"{SERVICE}|version=v2": 1}),
        ({"x-version": "<present>"}, {f"{SERVICE}|unknown-version": 1}),
        ({}, {f"{SERVICE}|*": 1}),
    ]
    assert all(r.match.prefix == "" for r in table)
    assert t.warnings == []


def test_endpoints_every_locality_weighted() -> None:
    t = translation([node(1, "v1"), node(2, "v2"), node(3, "v1")])
    assignment = t.load_assignment(f"{SERVICE}|version=v1")
    (locality,) = assignment.endpoints
    assert locality.load_balancing_weight.value == 1
    ports = [e.endpoint.address.socket_address.port_value for e in locality.lb_endpoints]
    assert ports == [9001, 9003]
    assert all(e.load_balancing_weight.value == 1 for e in locality.lb_endpoints)
    assert not assignment.policy.drop_overloads


def test_unknown_version_drops_every_call_naming_service_and_versions() -> None:
    t = translation([node(1, "v1"), node(2, "v2")])
    assignment = t.load_assignment(f"{SERVICE}|unknown-version")
    assert not assignment.endpoints
    (drop,) = assignment.policy.drop_overloads
    assert drop.drop_percentage.numerator == 100
    assert drop.drop_percentage.denominator == 0  # HUNDRED
    assert SERVICE in drop.category and "known versions: v1, v2" in drop.category
    assert drop.category.startswith("no match found conn")


def test_no_node_at_all() -> None:
    t = translation([])
    assert [target(r) for r in routes(t)] == [
        {f"{SERVICE}|unknown-version": 1},
        {f"{SERVICE}|*": 1},
    ]
    (drop,) = t.load_assignment(f"{SERVICE}|*").policy.drop_overloads
    assert "no node registered (known versions: none)" in drop.category


def test_weight_zero_is_drained_and_weights_become_localities() -> None:
    t = translation([node(1, "v1", weight="3"), node(2, "v1", weight="0"), node(3, "v1")])
    assignment = t.load_assignment(f"{SERVICE}|*")
    weights = {
        loc.lb_endpoints[
            0
        ].endpoint.address.socket_address.port_value: loc.load_balancing_weight.value
        for loc in assignment.endpoints
    }
    assert weights == {9001: 3, 9003: 1}  # random (the default) honours weights via localities


def test_route_table_canary_weights_and_fallback() -> None:
    config = {
        "routes": [
            {"match": {"headers": {"x-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
            {
                "to": [
                    {"subset": {"version": "v1"}, "weight": 90},
                    {"subset": {"version": "v2"}, "weight": 10},
                    {"subset": {"version": "v3"}, "weight": 5},
                ]
            },
        ],
        "fallback": [{"version": "v1"}],
    }
    t = translation([node(1, "v1"), node(2, "v2")], config)
    table = routes(t)
    assert target(table[2]) == {f"{SERVICE}|version=v1": 1}  # unknown pinned -> fallback
    assert headers(table[3]) == {"x-tier": "beta"}
    assert target(table[3]) == {f"{SERVICE}|version=v2": 1}
    # v3 has no node: its share goes to the fallback, merged with v1's
    assert target(table[4]) == {f"{SERVICE}|version=v1": 95, f"{SERVICE}|version=v2": 10}
    assert target(table[5]) == {f"{SERVICE}|*": 1}


def test_source_matches_are_decided_per_caller() -> None:
    config = {
        "routes": [
            {"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]},
            {"match": {"route": {"zone": "a"}}, "to": [{"subset": {"version": "v1"}}]},
        ]
    }
    t = translation([node(1, "v1"), node(3, "v3")], config)
    assert len(routes(t, {"version": "v2"})) == len(routes(t, {})) + 1
    assert target(routes(t, {"version": "v2"})[3]) == {f"{SERVICE}|version=v3": 1}
    assert any("route() values" in w for w in t.warnings)


def test_method_match_and_method_config_retries_and_timeout() -> None:
    config = {
        "routes": [
            {"match": {"method": "/proto.Api/ApiTest"}, "to": [{"subset": {"version": "v1"}}]}
        ],
        "methodConfig": [
            {
                "name": [{"service": "proto.Api"}],
                "timeout": "2s",
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"],
                },
            }
        ],
    }
    t = translation([node(1, "v1")], config)
    table = routes(t)
    method_routes = [r for r in table if r.match.path == "/proto.Api/ApiTest"]
    assert len(method_routes) == 1  # the service-wide retry narrowed onto the method route
    retry = method_routes[0].route.retry_policy
    assert retry.retry_on == "unavailable"
    assert retry.num_retries.value == 2
    assert retry.retry_back_off.base_interval.ToMilliseconds() == 10
    assert method_routes[0].route.max_stream_duration.max_stream_duration.seconds == 2
    prefixed = [r for r in table if r.match.prefix == "/proto.Api/"]
    assert prefixed and all(r.route.HasField("retry_policy") for r in prefixed)
    unmatched = [r for r in table if r.match.prefix == "" and not r.match.path]
    assert all(not r.route.HasField("retry_policy") for r in unmatched)
    assert any("ABORTED" in w for w in t.warnings)


@pytest.mark.parametrize(
    ("policy", "lb_policy", "warned"),
    [
        ({"round_robin": {}}, "ROUND_ROBIN", False),
        ({"least_request": {}}, "ROUND_ROBIN", True),
        ({"random": {}}, "ROUND_ROBIN", True),
        ({"ring_hash": {"requestHashHeader": "x-user", "minRingSize": 64}}, "RING_HASH", False),
    ],
)
def test_policies_map_to_cds(policy: dict[str, Any], lb_policy: str, warned: bool) -> None:
    t = translation([node(1, "v1")], {"loadBalancingConfig": [policy]})
    cluster = t.cluster(f"{SERVICE}|*")
    assert (
        cluster.DESCRIPTOR.fields_by_name["lb_policy"]
        .enum_type.values_by_number[cluster.lb_policy]
        .name
        == lb_policy
    )
    assert cluster.eds_cluster_config.service_name == f"{SERVICE}|*"
    assert bool(t.warnings) == warned
    if lb_policy == "RING_HASH":
        assert cluster.ring_hash_lb_config.minimum_ring_size.value == 64
        assert routes(t)[-1].route.hash_policy[0].header.header_name == "x-user"


@pytest.mark.parametrize("wrapper", ["deterministic_subsetting", "random_subsetting"])
def test_subsetting_is_not_in_grpc_xds_so_its_child_policy_is_served(wrapper: str) -> None:
    child = {"ring_hash": {"requestHashHeader": "x-user", "minRingSize": 64}}
    settings = {"subsetSize": 2, "childPolicy": [child]}
    t = translation([node(1, "v1"), node(2, "v1")], {"loadBalancingConfig": [{wrapper: settings}]})
    cluster = t.cluster(f"{SERVICE}|*")
    assert cluster.lb_policy == cluster.RING_HASH
    assert cluster.ring_hash_lb_config.minimum_ring_size.value == 64
    assert routes(t)[-1].route.hash_policy[0].header.header_name == "x-user"
    assert t.warnings == [
        f"{SERVICE}: {wrapper} is not in gRPC's xDS clients (grpcio has no subsetting); "
        "serving its childPolicy 'ring_hash' over every node"
    ]
    default = translation([node(1, "v1")], {"loadBalancingConfig": [{wrapper: {}}]})
    assert default.policy == "round_robin" and len(default.warnings) == 1


def test_pick_first_uses_the_load_balancing_policy_field() -> None:
    t = translation([node(1, "v1")], {"loadBalancingConfig": [{"pick_first": {}}]})
    (policy,) = t.cluster(f"{SERVICE}|*").load_balancing_policy.policies
    assert policy.typed_extension_config.typed_config.type_url.endswith("PickFirst")


def test_outlier_detection() -> None:
    config = {
        "outlierDetection": {
            "interval": "1s",
            "baseEjectionTime": "5s",
            "maxEjectionPercent": 50,
            "consecutiveErrors": 5,
            "failurePercentageEjection": {"threshold": 60},
        }
    }
    t = translation([node(1, "v1")], config)
    detection = t.cluster(f"{SERVICE}|*").outlier_detection
    assert detection.interval.seconds == 1
    assert detection.base_ejection_time.seconds == 5
    assert detection.max_ejection_percent.value == 50
    assert detection.enforcing_success_rate.value == 0  # off unless configured (gRFC A50)
    assert detection.failure_percentage_threshold.value == 60
    assert detection.enforcing_failure_percentage.value == 100
    assert any("consecutiveErrors" in w for w in t.warnings)


def test_resource_lookup_by_type_and_name() -> None:
    t = translation([node(1, "v1")])
    assert t.resource(LDS, SERVICE, {}).name == SERVICE
    assert t.resource(RDS, SERVICE, {}).name == SERVICE
    assert t.resource(CDS, f"{SERVICE}|version=v9", {}).name == f"{SERVICE}|version=v9"
    assert t.resource(EDS, f"{SERVICE}|version=v9", {}).policy.drop_overloads
    assert t.resource(LDS, "other.srv", {}) is None
    assert t.resource(CDS, "other.srv|*", {}) is None
    assert t.resource(CDS, "garbage", {}) is None
    everything = t.resources()
    assert set(everything[CDS]) == {
        f"{SERVICE}|version=v1",
        f"{SERVICE}|unknown-version",
        f"{SERVICE}|*",
    }


def test_unparsable_address_is_skipped_with_a_warning() -> None:
    bad = Node(SERVICE, "bad", "no-port", "v1", key="/hw/srv/app/bad")
    t = translation([bad, node(1, "v1")])
    assert [n.id for n in t.state.nodes] == ["n1"]
    assert any("/hw/srv/app/bad" in w for w in t.warnings)


def test_an_address_registered_twice_is_kept_once() -> None:
    twin = Node(SERVICE, "twin", "127.0.0.1:9001", "v2", key="/hw/srv/app/z-twin")
    t = translation([node(1, "v1"), twin])
    assert [n.id for n in t.state.nodes] == ["n1"]
    assert any("z-twin" in w and "127.0.0.1:9001" in w for w in t.warnings)


def test_a_node_without_version_gets_no_pinned_route() -> None:
    t = translation([node(1, "")])
    assert [headers(r) for r in routes(t)] == [{"x-version": "<present>"}, {}]


def test_a_method_marked_offline_gets_routes_without_those_nodes() -> None:
    t = translation(
        [node(1, "v1", offline=("ApiTest",)), node(2, "v1"), node(3, "v2", ("ApiTest",))]
    )
    table = routes(t)
    regex = [r for r in table if r.match.HasField("safe_regex")]
    assert [r.match.safe_regex.regex for r in regex] == ["^/[^/]+/ApiTest$"] * 4
    assert [target(r) for r in regex] == [
        {f"{SERVICE}|version=v1!ApiTest": 1},
        {f"{SERVICE}|version=v2!ApiTest": 1},  # no v2 node serves it: that cluster drops
        {f"{SERVICE}|unknown-version!ApiTest": 1},
        {f"{SERVICE}|*!ApiTest": 1},
    ]
    assert table.index(regex[-1]) < len(table) - 4  # before the routes of every other call
    ports = [
        e.endpoint.address.socket_address.port_value
        for loc in t.load_assignment(f"{SERVICE}|*!ApiTest").endpoints
        for e in loc.lb_endpoints
    ]
    assert ports == [9002]
    (drop,) = t.load_assignment(f"{SERVICE}|version=v2!ApiTest").policy.drop_overloads
    assert "no node in subset version=v2 serving ApiTest" in drop.category


def test_offline_full_method_name_and_a_method_route() -> None:
    config = {
        "routes": [{"match": {"method": "/proto.Api/"}, "to": [{"subset": {"version": "v1"}}]}]
    }
    t = translation([node(1, "v1", offline=("/proto.Api/ApiTest",)), node(2, "v1")], config)
    table = routes(t)
    paths = [(r.match.path, target(r)) for r in table if r.match.path]
    without = cluster_name(SERVICE, {"version": "v1"}, "/proto.Api/ApiTest")
    assert ("/proto.Api/ApiTest", {without: 1}) in paths
    assert all(not r.match.HasField("safe_regex") for r in table)


# ---------------------------------------------------------------- large fleets


def _zoned(a: int, b: int) -> list[Node]:
    return [node(i, "v1", zone="a") for i in range(a)] + [
        node(10 + i, "v1", zone="b") for i in range(b)
    ]


def _localities(assignment: Any) -> list[tuple[int, str, int, int]]:
    """(priority, zone, weight, endpoints) of each locality."""
    return [
        (e.priority, e.locality.zone, e.load_balancing_weight.value, len(e.lb_endpoints))
        for e in assignment.endpoints
    ]


def test_prefer_local_is_the_callers_zone_first_and_the_others_as_failover() -> None:
    config = {"locality": {"mode": "prefer_local", "minClusterSize": 4}}
    t = translation(_zoned(3, 3), config)
    name = cluster_name(SERVICE, {})
    assert _localities(t.load_assignment(name, {"zone": "a"})) == [(0, "a", 1, 3), (1, "", 1, 3)]
    assert _localities(t.load_assignment(name, {"zone": "b"})) == [(0, "b", 1, 3), (1, "", 1, 3)]
    assert _localities(t.load_assignment(name, {})) == [(0, "", 1, 6)], "no zone: no priorities"
    small = translation(_zoned(1, 2), config)
    assert _localities(small.load_assignment(name, {"zone": "a"})) == [(0, "", 1, 3)]
    # One EDS per caller zone, computed once.
    assert t.serialized(EDS, name, {"zone": "a", "v": "1"}) is t.serialized(
        EDS, name, {"zone": "a"}
    )
    assert t.serialized(EDS, name, {"zone": "a"}) != t.serialized(EDS, name, {"zone": "b"})
    assert any("prefer_local is sent as EDS priorities" in w for w in t.warnings)


def test_zone_aware_weights_localities_by_envoys_shares_of_the_connected_clients() -> None:
    config = parse_config({"locality": {"mode": "zone_aware", "minClusterSize": 3}})
    snapshot = Snapshot(SERVICE, {n.key: n for n in _zoned(1, 2)}, revision=7)
    t = Translation(ServiceState.of(snapshot, config, {"a": 2, "b": 1}))
    name = cluster_name(SERVICE, {})
    # Callers 2/3 in a, nodes 1/3 in a: half of an a-caller's calls stay in a, half go to b.
    assert _localities(t.load_assignment(name, {"zone": "a"})) == [
        (0, "a", 500_000, 1),
        (0, "b", 500_000, 2),
    ]
    # b-callers keep everything in b; a is their failover.
    assert _localities(t.load_assignment(name, {"zone": "b"})) == [
        (0, "b", 1_000_000, 2),
        (1, "a", 1, 1),
    ]
    alone = Translation(ServiceState.of(snapshot, config, {"a": 3}))
    assert _localities(alone.load_assignment(name, {"zone": "a"})) == [(0, "", 1, 3)]


def test_panic_threshold_and_slow_start_have_no_xds_equivalent() -> None:
    t = translation(
        _zoned(1, 1),
        {
            "panicThreshold": 50,
            "loadBalancingConfig": [
                {"round_robin": {"slowStartConfig": {"slowStartWindow": "9s"}}}
            ],
        },
    )
    assert any("panicThreshold has no equivalent" in w for w in t.warnings)
    assert any("slowStartConfig has no equivalent" in w for w in t.warnings)


def test_hedging_and_retry_throttling_have_no_xds_equivalent() -> None:
    t = translation(
        _zoned(1, 1),
        {
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
            "methodConfig": [
                {
                    "name": [{}],
                    "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.2s"},
                }
            ],
        },
    )
    assert any("retryThrottling has no equivalent" in w for w in t.warnings)
    assert any("hedgingPolicy has no equivalent" in w for w in t.warnings)
    assert not any("hedgingPolicy" in w for w in translation(_zoned(1, 1), {}).warnings)


def test_the_largest_weights_a_document_may_hold_translate() -> None:
    """A route's weights sum to at most 2**32 - 1 (the config refuses more): xDS sends them as
    uint32, and a weight above it made the translation raise (protobuf's range check)."""
    most = 2**32 - 1
    split = {
        "to": [{"subset": {"version": "v1"}, "weight": most - 1}, {"subset": {"version": "v2"}}]
    }
    t = translation([node(1, "v1"), node(2, "v2")], {"routes": [split]})
    assert [1, most - 1] in [sorted(target(route).values()) for route in routes(t)]
