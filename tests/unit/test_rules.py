"""rules.py, directly (pure): a node's labels and subset selectors, offline methods, the pinned
version, the route table (source, method names and prefixes, headers, route values, the canary
split) and the fallback chain. test_balancer.py checks the same rules through the balancer."""

from __future__ import annotations

import random
from typing import Any

import pytest

from grpc_etcd import rules
from grpc_etcd.config import parse_config
from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.routing import CallInfo
from grpc_etcd.rules import (
    ANY,
    RouteTable,
    fallback_chain,
    method_is_offline,
    node_labels,
    offline_methods,
    selector,
    selects,
    version_selector,
)

V1, V2, V3 = version_selector("v1"), version_selector("v2"), version_selector("v3")
V3_SUBSET = {"version": "v3"}


def _table(document: dict[str, Any], source: dict[str, str] | None = None) -> RouteTable:
    return RouteTable(parse_config(document), source)


def _chosen(table: RouteTable, call: CallInfo) -> rules.Selector:
    return table.selectors[table.choose(call)]


# ---------------------------------------------------------------- labels and selectors


def test_a_nodes_labels_are_its_metadata_and_its_version_which_wins() -> None:
    node = Node("s", "a", "127.0.0.1:1", "v2", {"zone": "z", "version": "v9"})
    assert node_labels(node) == {"zone": "z", "version": "v2"}, "the record's field wins"
    assert node_labels(Node("s", "b", "127.0.0.1:2")) == {"version": "latest"}


def test_a_selector_is_its_pairs_sorted_and_holds_when_every_pair_holds() -> None:
    wanted = selector({"zone": "z", "version": "v1"})
    assert wanted == (("version", "v1"), ("zone", "z"))
    assert wanted == selector({"version": "v1", "zone": "z"}), "one form whatever the order"
    assert selects(wanted, {"version": "v1", "zone": "z", "tier": "gold"}), "extra labels: fine"
    assert not selects(wanted, {"version": "v1"}), "a label it names is missing"
    assert not selects(wanted, {"version": "v1", "zone": "y"})
    assert selector({}) == ANY
    assert selects(ANY, {}) and selects(ANY, {"version": "v1"}), "{} holds for every node"


def test_the_pinned_version_is_a_selector_of_the_version_label_alone() -> None:
    assert version_selector("v1") == (("version", "v1"),) == selector({"version": "v1"})
    node = Node("s", "a", "127.0.0.1:1", "v1", {"zone": "z"})
    assert selects(version_selector("v1"), node_labels(node))
    assert not selects(version_selector("v2"), node_labels(node))
    assert selects(version_selector(""), node_labels(Node("s", "b", "127.0.0.1:2", "")))


# ---------------------------------------------------------------- offline methods


def test_offline_methods_are_those_the_record_marks_online_false() -> None:
    node = Node(
        "s",
        "a",
        "127.0.0.1:1",
        methods={
            "Get": MethodInfo(online=False),
            "/pkg.Api/Put": MethodInfo(online=False),
            "List": MethodInfo(),
        },
    )
    assert offline_methods(node) == {"Get", "/pkg.Api/Put"}
    assert offline_methods(Node("s", "b", "127.0.0.1:2")) == frozenset()


def test_an_offline_method_is_named_fully_or_by_its_last_part() -> None:
    offline = frozenset({"Get", "/pkg.Api/Put"})
    assert method_is_offline(offline, "/pkg.Api/Get"), "the seed's short name"
    assert method_is_offline(offline, "/other.Svc/Get"), "a short name holds for any service"
    assert method_is_offline(offline, "/pkg.Api/Put")
    assert not method_is_offline(offline, "/other.Svc/Put"), "a full name holds for itself only"
    assert not method_is_offline(offline, "/pkg.Api/Gets")
    assert not method_is_offline(frozenset(), "/pkg.Api/Get")


# ---------------------------------------------------------------- the route table


def test_no_route_every_call_may_reach_any_node() -> None:
    table = _table({})
    assert table.empty and table.selectors == (ANY,) and table.fallback == ()
    assert table.choose(CallInfo("/pkg.Api/Get")) == 0


def test_the_selectors_are_any_first_then_each_subset_once_in_order() -> None:
    table = _table(
        {
            "routes": [
                {"match": {"method": "/pkg.Api/Get"}, "to": [{"subset": {"version": "v2"}}]},
                {
                    "to": [
                        {"subset": {"version": "v1"}, "weight": 3},
                        {"subset": {"version": "v2"}, "weight": 1},
                        {"subset": {}, "weight": 1},
                    ]
                },
            ]
        }
    )
    assert table.selectors == (ANY, V2, V1)
    assert not table.empty


def test_routes_whose_source_does_not_hold_are_dropped_for_this_channel() -> None:
    document = {
        "routes": [
            {
                "match": {"source": {"service": "app", "version": "v2"}},
                "to": [{"subset": V3_SUBSET}],
            },
            {"match": {"source": {"version": "v1"}}, "to": [{"subset": {"version": "v1"}}]},
        ]
    }
    assert _table(document).empty, "no source labels: no route holds"
    table = _table(document, {"service": "app", "version": "v2", "zone": "z"})
    assert _chosen(table, CallInfo("/pkg.Api/Get")) == V3
    assert _chosen(_table(document, {"version": "v1"}), CallInfo("/m/x")) == V1
    assert _table(document, {"service": "app"}).empty, "every source label must hold"


def test_a_method_route_matches_the_full_name_exactly_or_a_service_prefix() -> None:
    table = _table(
        {
            "routes": [
                {"match": {"method": "/pkg.Admin/"}, "to": [{"subset": V3_SUBSET}]},
                {"match": {"method": "/pkg.Api/Put"}, "to": [{"subset": {"version": "v2"}}]},
            ]
        }
    )
    assert _chosen(table, CallInfo("/pkg.Admin/Reset")) == V3
    assert _chosen(table, CallInfo("/pkg.Admin/")) == V3
    assert _chosen(table, CallInfo("/pkg.Admin2/Reset")) == ANY, "a prefix ends at the '/'"
    assert _chosen(table, CallInfo("/pkg.Api/Put")) == V2
    assert _chosen(table, CallInfo("/pkg.Api/Putt")) == ANY, "a full name is matched exactly"
    assert _chosen(table, CallInfo("/pkg.Api/Pu")) == ANY
    assert _chosen(table, CallInfo("/x.pkg.Api/Put")) == ANY


def test_a_header_route_matches_a_value_sent_as_text_or_bytes_among_several() -> None:
    table = _table(
        {"routes": [{"match": {"headers": {"X-User-Tier": "beta"}}, "to": [{"subset": V3_SUBSET}]}]}
    )
    beta = CallInfo("/m/x", metadata=(("x-user-tier", "beta"),))
    assert _chosen(table, beta) == V3, "keys are lower-cased in the config, as gRPC sends them"
    assert _chosen(table, CallInfo("/m/x", metadata=(("x-user-tier", b"beta"),))) == V3
    several = (("x-user-tier", "gold"), ("x-other", "beta"), ("x-user-tier", "beta"))
    assert _chosen(table, CallInfo("/m/x", metadata=several)) == V3, "any of its values"
    for metadata in (
        (("x-user-tier", "gold"),),
        (("x-user-tier", "Beta"),),
        (("x-user-tier", b"bet"),),
        (("x-user-tier-2", "beta"),),
        (),
    ):
        assert _chosen(table, CallInfo("/m/x", metadata=metadata)) == ANY, metadata


def test_a_route_value_route_matches_the_calls_route_values() -> None:
    table = _table(
        {"routes": [{"match": {"route": {"tenant": "t1"}}, "to": [{"subset": V3_SUBSET}]}]}
    )
    assert _chosen(table, CallInfo("/m/x", route={"tenant": "t1", "x": "y"})) == V3
    assert _chosen(table, CallInfo("/m/x", route={"tenant": "t2"})) == ANY
    assert _chosen(table, CallInfo("/m/x")) == ANY


def test_every_part_of_a_match_must_hold_and_the_first_route_that_holds_wins() -> None:
    table = _table(
        {
            "routes": [
                {
                    "match": {
                        "method": "/pkg.Api/",
                        "headers": {"x-a": "1"},
                        "route": {"tenant": "t1"},
                    },
                    "to": [{"subset": V3_SUBSET}],
                },
                {"match": {"method": "/pkg.Api/Get"}, "to": [{"subset": {"version": "v2"}}]},
                {"to": [{"subset": {"version": "v1"}}]},
                {"match": {"method": "/pkg.Api/Put"}, "to": [{"subset": {"version": "v2"}}]},
            ]
        }
    )
    all_of_it = CallInfo("/pkg.Api/Get", route={"tenant": "t1"}, metadata=(("x-a", "1"),))
    assert _chosen(table, all_of_it) == V3
    assert _chosen(table, all_of_it._replace(route={})) == V2, "the route value is missing"
    assert _chosen(table, all_of_it._replace(metadata=())) == V2, "the header is missing"
    assert _chosen(table, CallInfo("/pkg.Api/Put")) == V1, (
        "an empty match holds: routes after it never do"
    )


def test_the_canary_split_draws_by_cumulative_weight_and_skips_weight_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _table(
        {
            "routes": [
                {
                    "to": [
                        {"subset": {"version": "v1"}, "weight": 90},
                        {"subset": {"version": "v3"}, "weight": 0},
                        {"subset": {"version": "v2"}, "weight": 10},
                    ]
                }
            ]
        }
    )
    assert table.selectors == (ANY, V1, V2), "a weight-0 subset is never a target"
    call = CallInfo("/m/x")
    for draw, wanted in [(0.0, V1), (0.8999, V1), (0.9, V2), (0.9999, V2)]:
        monkeypatch.setattr(rules, "_rand", lambda draw=draw: draw)
        assert _chosen(table, call) == wanted, draw


def test_the_canary_split_over_many_calls_follows_the_weights() -> None:
    table = _table(
        {
            "routes": [
                {
                    "to": [
                        {"subset": {"version": "v1"}, "weight": 1},
                        {"subset": {"version": "v2"}, "weight": 3},
                    ]
                }
            ]
        }
    )
    random.seed(5)
    v2 = sum(_chosen(table, CallInfo("/m/x")) == V2 for _ in range(10_000)) / 10_000
    # Expected 75 %; sd of the share over 10,000 draws is 0.43 %, bound 2 % (> 4 sd).
    assert abs(v2 - 0.75) < 0.02, v2


# ---------------------------------------------------------------- fallback


def test_the_fallback_chain_is_the_wanted_subset_then_the_others_in_order() -> None:
    assert fallback_chain(V1, ()) == (V1,), "no fallback: the seed's behaviour"
    assert fallback_chain(V1, (V2, ANY)) == (V1, V2, ANY)
    assert fallback_chain(V2, (V2, ANY)) == (V2, ANY), "the wanted subset is not tried twice"
    assert fallback_chain(ANY, (V1, ANY, V2)) == (ANY, V1, V2)


def test_the_route_table_keeps_the_configs_fallback_selectors_in_order() -> None:
    table = _table({"fallback": [{"version": "v2"}, {"zone": "z", "version": "v1"}, {}]})
    assert table.fallback == (V2, (("version", "v1"), ("zone", "z")), ANY)
    assert fallback_chain(V2, table.fallback) == table.fallback
