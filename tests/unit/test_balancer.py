"""The shared balancer and the rules: subsets, pinned versions, routes, fallbacks, offline nodes."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from policy_helpers import ep, ready, share, spread

from grpc_etcd.config import parse_config
from grpc_etcd.policies import (
    Balancer,
    ConnState,
    Endpoint,
    NoMatchError,
    NotReadyError,
    Picker,
    RandomPolicy,
)
from grpc_etcd.routing import CallInfo

READY, CONNECTING, IDLE, FAILING = (
    ConnState.READY,
    ConnState.CONNECTING,
    ConnState.IDLE,
    ConnState.TRANSIENT_FAILURE,
)
GET = CallInfo("/pkg.Api/Get")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(11)


def build(
    endpoints: Sequence[Endpoint[str]], config: dict[str, Any] | None = None, **kw: Any
) -> Picker[str]:
    return Balancer[str](parse_config(config or {}), **kw).build(endpoints)


def picks(picker: Picker[str], call: CallInfo = GET, n: int = 200) -> set[str]:
    return set(spread(picker, n, call))


MIXED = [ep("a1", "v1"), ep("a2", "v1"), ep("b1", "v2"), ep("c1", "v3", zone="z")]


# ---------------------------------------------------------------- pinned version, subsets


def test_pinned_version_and_no_version() -> None:
    picker = build(MIXED)
    assert picks(picker, CallInfo("/m", "v1")) == {"a1", "a2"}
    assert picks(picker, CallInfo("/m", "v2")) == {"b1"}
    assert picks(picker) == {"a1", "a2", "b1", "c1"}, "no version, no routes: every node"
    with pytest.raises(NoMatchError) as info:
        picker.pick(CallInfo("/m", "v9"))
    assert info.value.details == "no match found conn"
    with pytest.raises(NotReadyError):
        picker.pick(CallInfo("/m", "v9", wait_for_ready=True))


def test_pinned_calls_skip_the_route_table() -> None:
    config = {"routes": [{"to": [{"subset": {"version": "v2"}}]}]}
    picker = build(MIXED, config)
    assert picks(picker) == {"b1"}
    assert picks(picker, CallInfo("/m", "v1")) == {"a1", "a2"}, "the caller's word is final"


def test_subset_selectors_test_metadata_labels() -> None:
    config = {"routes": [{"to": [{"subset": {"zone": "z"}}]}]}
    assert picks(build(MIXED, config)) == {"c1"}
    config = {"routes": [{"to": [{"subset": {"zone": "z", "version": "v1"}}]}]}
    with pytest.raises(NoMatchError):
        build(MIXED, config).pick(GET)


# ---------------------------------------------------------------- route table


def test_caller_rules_by_source_labels() -> None:
    """ROUTING.md's example: app v2 may only call user v3."""
    config = {
        "routes": [{"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]}]
    }
    assert picks(build(MIXED, config, source={"service": "app", "version": "v2"})) == {"c1"}
    assert picks(build(MIXED, config, source={"version": "v1"})) == {"a1", "a2", "b1", "c1"}
    assert picks(build(MIXED, config)) == {"a1", "a2", "b1", "c1"}


def test_header_route_and_method_matches() -> None:
    config = {
        "routes": [
            {"match": {"headers": {"x-user-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
            {"match": {"route": {"tenant": "t1"}}, "to": [{"subset": {"version": "v3"}}]},
            {"match": {"method": "/pkg.Admin/"}, "to": [{"subset": {"version": "v3"}}]},
            {"match": {"method": "/pkg.Api/Put"}, "to": [{"subset": {"version": "v2"}}]},
            {"to": [{"subset": {"version": "v1"}}]},
        ]
    }
    picker = build(MIXED, config)
    assert picks(picker, CallInfo("/pkg.Api/Get", metadata=(("x-user-tier", "beta"),))) == {"b1"}
    assert picks(picker, CallInfo("/pkg.Api/Get", metadata=(("x-user-tier", b"beta"),))) == {"b1"}
    assert picks(picker, CallInfo("/pkg.Api/Get", metadata=(("x-user-tier", "gold"),))) == {
        "a1",
        "a2",
    }
    assert picks(picker, CallInfo("/pkg.Api/Get", route={"tenant": "t1"})) == {"c1"}
    assert picks(picker, CallInfo("/pkg.Admin/Reset")) == {"c1"}, "a service prefix"
    assert picks(picker, CallInfo("/pkg.Api/Put")) == {"b1"}, "a full method name"
    assert picks(picker, CallInfo("/pkg.Api/Putt")) == {"a1", "a2"}, "full names match exactly"


def test_a_match_holds_only_when_all_it_names_holds() -> None:
    config = {
        "routes": [
            {
                "match": {"headers": {"x-a": "1"}, "method": "/pkg.Api/Get"},
                "to": [{"subset": {"version": "v2"}}],
            }
        ]
    }
    picker = build(MIXED, config)
    assert picks(picker, CallInfo("/pkg.Api/Get", metadata=(("x-a", "1"),))) == {"b1"}
    assert len(picks(picker, CallInfo("/pkg.Api/Put", metadata=(("x-a", "1"),)))) == 4


def test_canary_split_within_two_percent_over_10000_calls() -> None:
    config = {
        "routes": [
            {
                "to": [
                    {"subset": {"version": "v1"}, "weight": 90},
                    {"subset": {"version": "v2"}, "weight": 10},
                ]
            }
        ]
    }
    counts = spread(build(MIXED, config), 10000)
    v2 = share(counts, "b1")
    # Expected 10 %; sd of the share over 10,000 draws is 0.3 %, the bound +-2 % is ~6.7 sd.
    assert abs(v2 - 0.10) < 0.02, counts
    assert abs(share(counts, "a1") + share(counts, "a2") - 0.90) < 0.02


def test_weight_zero_subset_gets_no_calls() -> None:
    config = {
        "routes": [
            {"to": [{"subset": {"version": "v1"}, "weight": 0}, {"subset": {"version": "v2"}}]}
        ]
    }
    assert picks(build(MIXED, config), n=500) == {"b1"}


# ---------------------------------------------------------------- fallback


FALLBACK = {
    "routes": [{"to": [{"subset": {"version": "v9"}}]}],
    "fallback": [{"version": "v2"}, {}],
}


def test_no_fallback_is_the_seed_a_missing_subset_is_no_match() -> None:
    with pytest.raises(NoMatchError):
        build(MIXED, {"routes": [{"to": [{"subset": {"version": "v9"}}]}]}).pick(GET)


def test_fallback_in_order_when_the_subset_has_no_node() -> None:
    assert picks(build(MIXED, FALLBACK)) == {"b1"}
    without_v2 = [e for e in MIXED if e.node.version != "v2"]
    assert picks(build(without_v2, FALLBACK)) == {"a1", "a2", "c1"}, "then {} = any node"
    assert picks(build(MIXED, FALLBACK), CallInfo("/m", "v7")) == {"b1"}, "pinned too"
    with pytest.raises(NoMatchError):
        build([], FALLBACK).pick(GET)


@pytest.mark.parametrize(
    ("unusable", "failure"),
    [
        ({"state": FAILING, "error": "connection refused"}, "connection refused"),
        ({"serving": False}, "is NOT_SERVING (health check)"),
        ({"ejected": True}, "is ejected by outlier detection"),
    ],
)
def test_fallback_also_when_every_node_of_the_subset_is_unusable(
    unusable: dict[str, Any], failure: str
) -> None:
    config = {"routes": [{"to": [{"subset": {"version": "v1"}}]}], "fallback": [{"version": "v2"}]}
    endpoints = [ep("a1", "v1", **unusable), ep("a2", "v1", **unusable), ep("b1", "v2")]
    assert picks(build(endpoints, config)) == {"b1"}
    # Without a fallback, the failure is the call's answer (UNAVAILABLE unless wait_for_ready).
    with pytest.raises(NotReadyError) as info:
        build(endpoints, {"routes": config["routes"]}).pick(GET)
    assert info.value.failure is not None and failure in info.value.failure
    # And when the fallback is unusable too, the first subset's failure is reported.
    endpoints[2] = ep("b1", "v2", FAILING, error="b1 down")
    with pytest.raises(NotReadyError) as info:
        build(endpoints, config).pick(GET)
    assert info.value.failure is not None and failure in info.value.failure


@pytest.mark.parametrize("state", [CONNECTING, IDLE])
def test_no_fallback_while_a_node_of_the_subset_is_still_connecting(state: ConnState) -> None:
    config = {"routes": [{"to": [{"subset": {"version": "v1"}}]}], "fallback": [{"version": "v2"}]}
    endpoints = [ep("a1", "v1", FAILING, error="x"), ep("a2", "v1", state), ep("b1", "v2")]
    with pytest.raises(NotReadyError) as info:
        build(endpoints, config).pick(GET)
    assert info.value.failure is None, "the call waits (within its deadline)"


def test_usable_nodes_are_picked_while_others_connect() -> None:
    endpoints = [ep("a1", "v1"), ep("a2", "v1", CONNECTING), ep("a3", "v1", serving=False)]
    assert picks(build(endpoints)) == {"a1"}


# ---------------------------------------------------------------- offline


def test_a_method_marked_offline_skips_that_node_for_that_method_only() -> None:
    endpoints = [ep("a1", offline=("Get",)), ep("a2")]
    picker = build(endpoints)
    assert picks(picker, CallInfo("/pkg.Api/Get")) == {"a2"}
    assert picks(picker, CallInfo("/pkg.Api/Put")) == {"a1", "a2"}
    with pytest.raises(NoMatchError):
        build([ep("a1", offline=("Get",))]).pick(CallInfo("/pkg.Api/Get"))


def test_an_offline_method_falls_back() -> None:
    config = {"routes": [{"to": [{"subset": {"version": "v1"}}]}], "fallback": [{}]}
    picker = build([ep("a1", offline=("/pkg.Api/Get",)), ep("b1", "v2")], config)
    assert picks(picker, CallInfo("/pkg.Api/Get")) == {"b1"}
    assert picks(picker, CallInfo("/pkg.Api/Put")) == {"a1"}


def test_a_node_marked_offline_gets_no_calls_and_counts_as_absent() -> None:
    picker = build([ep("a1", online=False), ep("b1", "v2")])
    assert picks(picker) == {"b1"}
    with pytest.raises(NoMatchError):
        picker.pick(CallInfo("/m", "v1"))


# ---------------------------------------------------------------- balancer mechanics


def test_two_records_at_one_sub_channel_get_one_share() -> None:
    one = Endpoint(ep("x1").node, "shared", READY)
    two = Endpoint(ep("x2").node, "shared", READY)
    counts = spread(build([one, two, ep("b")]), 4000)
    # Expected 50/50; sd 0.8 %, bound 5 %.
    assert abs(share(counts, "shared") - 0.5) < 0.05, counts


class _Counting(RandomPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.built: list[tuple[str, ...]] = []

    def build(self, ready: Sequence[Endpoint[Any]]) -> Any:
        self.built.append(tuple(sorted(e.subchannel for e in ready)))
        return super().build(ready)


def test_a_change_of_one_node_rebuilds_only_its_groups() -> None:
    policy = _Counting()
    balancer = Balancer[str](policy=policy)
    endpoints = [*ready("a1", "a2"), ep("b1", "v2"), ep("c1", "v3")]
    balancer.build(endpoints)
    assert sorted(policy.built) == sorted(
        [("a1", "a2"), ("b1",), ("c1",), ("a1", "a2", "b1", "c1")]
    ), "one child picker per group: each version, and any"
    policy.built.clear()
    endpoints[2] = ep("b1", "v2", CONNECTING)
    picker = balancer.build(endpoints)
    assert sorted(policy.built) == [("a1", "a2", "c1")], "v2 now empty of usable nodes, any rebuilt"
    policy.built.clear()
    balancer.build(list(endpoints))
    assert policy.built == [], "nothing changed: every child picker reused"
    with pytest.raises(NotReadyError):
        picker.pick(CallInfo("/m", "v2"))


def test_configure_lays_etcd_over_the_code_and_an_empty_one_returns_to_it() -> None:
    balancer = Balancer[str](
        parse_config({"routes": [{"to": [{"subset": {"version": "v1"}}]}]}), policy="round_robin"
    )
    assert balancer.policy.name == "round_robin"
    assert picks(balancer.build(MIXED)) == {"a1", "a2"}
    first_policy = balancer.policy
    balancer.configure(parse_config({"routes": [{"to": [{"subset": {"version": "v2"}}]}]}))
    assert picks(balancer.build(MIXED)) == {"b1"}
    assert balancer.policy is first_policy, "the policy (and its stats) stays"
    balancer.configure(parse_config({"loadBalancingConfig": [{"least_request": {}}]}))
    assert balancer.policy.name == "least_request"
    assert picks(balancer.build(MIXED)) == {"a1", "a2"}, "code's routes again"
    balancer.configure(parse_config({}))
    assert balancer.policy.name == "round_robin" and balancer.config.routes[0].to[0].subset == {
        "version": "v1"
    }


def test_unknown_policy_name_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="unknown balancing policy 'nope'"):
        Balancer[str](policy="nope")


def test_every_policy_runs_behind_the_balancer() -> None:
    for name in (
        "random",
        "version",
        "pick_first",
        "round_robin",
        "weighted_round_robin",
        "least_request",
        "p2c_ewma",
        "ring_hash",
    ):
        picker = build(MIXED, policy=name)
        assert picks(picker, CallInfo("/m", "v2"), 20) == {"b1"}, name
        with pytest.raises(NoMatchError):
            picker.pick(CallInfo("/m", "v9"))
