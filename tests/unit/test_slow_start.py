"""Slow start (policies/_slow_start.py): a warming node's share follows Envoy's formula."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from policy_helpers import ep, node, ready, share

from grpc_etcd.config import ConfigError, SlowStartConfig, parse_config
from grpc_etcd.policies import DoneInfo, Endpoint, LeastRequestPolicy, Policy, get_policy
from grpc_etcd.policies._slow_start import SlowStartPicker
from grpc_etcd.routing import CallInfo

CALL = CallInfo("/pkg.Api/Get")
OK = DoneInfo("OK", 0.001)
WINDOW = {"slowStartWindow": "30s", "aggression": 1.0, "minWeightPercent": 10}


def test_the_factor_is_envoys() -> None:
    linear = SlowStartConfig.model_validate(WINDOW)
    assert linear.factor(0) == 0.1, "minWeightPercent at first"
    assert linear.factor(15) == 0.5
    assert linear.factor(30) == linear.factor(99) == 1.0
    steep = SlowStartConfig.model_validate({**WINDOW, "aggression": 2.0})
    assert steep.factor(7.5) == pytest.approx(0.5), "(1/4) ^ (1/2)"
    assert SlowStartConfig.model_validate({"slowStartWindow": "10s"}).min_weight_percent == 10


@pytest.mark.parametrize(
    ("settings", "fault"),
    [
        ({"slowStartConfig": {}}, "slowStartWindow"),
        ({"slowStartConfig": {"slowStartWindow": "0s"}}, "slowStartWindow"),
        ({"slowStartConfig": {"slowStartWindow": "1s", "aggression": 0}}, "aggression"),
        ({"slowStartConfig": {"slowStartWindow": "1s", "minWeightPercent": 101}}, "minWeight"),
    ],
)
def test_bad_slow_start_settings_are_refused(settings: dict[str, object], fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        parse_config({"loadBalancingConfig": [{"round_robin": settings}]})


def test_slow_start_is_a_setting_of_four_policies() -> None:
    for name in ("random", "round_robin", "weighted_round_robin", "least_request"):
        config = parse_config({"loadBalancingConfig": [{name: {"slowStartConfig": WINDOW}}]})
        assert config.policy_config.slow_start_config is not None  # type: ignore[attr-defined]
    for name in ("pick_first", "p2c_ewma", "ring_hash"):
        with pytest.raises(ConfigError, match="slowStartConfig"):
            parse_config({"loadBalancingConfig": [{name: {"slowStartConfig": WINDOW}}]})


def _fleet(new_since: float | None) -> list[Endpoint[str]]:
    """Three warm nodes and ``d``, READY since ``new_since``."""
    old = [replace(e, ready_since=-100.0) for e in ready("a", "b", "c")]
    return [*old, replace(ep("d"), ready_since=new_since)]


def _counts(policy: Policy, endpoints: list[Endpoint[str]], n: int) -> Counter[str]:
    picker = policy.build(endpoints)
    counts: Counter[str] = Counter()
    for _ in range(n):
        pick = picker.pick(CALL)
        counts[pick.subchannel] += 1
        if pick.done is not None:
            pick.done(OK)
    return counts


@pytest.mark.parametrize("name", ["random", "round_robin", "weighted_round_robin", "least_request"])
def test_a_new_nodes_share_follows_the_formula_through_the_window(name: str) -> None:
    random.seed(7)
    clock = [0.0]
    policy = get_policy(name, {"slowStartConfig": WINDOW})
    policy._clock = lambda: clock[0]  # type: ignore[attr-defined]
    endpoints = _fleet(0.0)
    # 8,000 picks: the sd of a share <= 0.6 points; the bound, 5 points, is the issue's.
    for t in (0.0, 6.0, 15.0, 24.0, 29.0):
        clock[0] = t
        factor = max(0.1, t / 30)
        counts = _counts(policy, endpoints, 8000)
        assert abs(share(counts, "d") - factor / (3 + factor)) < 0.05, (t, counts)
    clock[0] = 31.0
    assert not isinstance(policy.build(endpoints), SlowStartPicker), "warm: no wrapper"


def test_without_slow_start_or_a_warming_node_the_picker_is_the_policys_own() -> None:
    plain = get_policy("round_robin").build(_fleet(0.0))
    assert not isinstance(plain, SlowStartPicker)
    policy = get_policy("round_robin", {"slowStartConfig": WINDOW})
    assert not isinstance(policy.build(_fleet(None)), SlowStartPicker), "unknown: warm"


def test_when_every_node_warms_shares_follow_their_factors() -> None:
    random.seed(3)
    policy = get_policy("random", {"slowStartConfig": {"slowStartWindow": "10s"}})
    policy._clock = lambda: 10.0  # type: ignore[attr-defined]
    # a READY for 8 s (factor 0.8), b for 2 s (0.2): 80 / 20 %; 10,000 picks, bound 3 points.
    endpoints = [replace(ep("a"), ready_since=2.0), replace(ep("b"), ready_since=8.0)]
    counts = _counts(policy, endpoints, 10000)
    assert abs(share(counts, "a") - 0.8) < 0.03, counts


def test_refused_picks_give_back_what_least_request_counted() -> None:
    random.seed(5)
    policy = LeastRequestPolicy({"slowStartConfig": WINDOW}, clock=lambda: 1.0)
    picker = policy.build(_fleet(0.0))
    picks = [picker.pick(CALL) for _ in range(1000)]
    addresses = [node(name).address for name in "abcd"]
    assert sum(map(policy.inflight, addresses)) == 1000, "one count per pick kept"
    for pick in picks:
        assert pick.done is not None
        pick.done(OK)
    assert sum(map(policy.inflight, addresses)) == 0
