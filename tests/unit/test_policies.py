"""policies/__init__.py: every policy by name; and the distributions of the policies that share
their tests (random, version, round_robin, weighted_round_robin), with fixed seeds and stated
bounds. Each other policy has a test module of its own."""

from __future__ import annotations

import random

import pytest
from policy_helpers import ep, ready, share, spread

from grpc_etcd.config import ConfigError
from grpc_etcd.policies import POLICIES, LeastRequestPolicy, get_policy
from grpc_etcd.routing import CallInfo

CALL = CallInfo("/pkg.Api/Get")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(7)


def test_get_policy_makes_a_new_instance_per_call_and_names_the_known_ones() -> None:
    assert set(POLICIES) == {
        "random",
        "version",
        "pick_first",
        "round_robin",
        "weighted_round_robin",
        "least_request",
        "p2c_ewma",
        "ring_hash",
        "deterministic_subsetting",
        "random_subsetting",
    }
    for name in POLICIES:
        first, second = get_policy(name), get_policy(name)
        assert first is not second and first.name == name
    mine = LeastRequestPolicy()
    assert get_policy(mine) is mine
    with pytest.raises(ValueError, match=r"unknown balancing policy 'rr'; known: random, version"):
        get_policy("rr")
    with pytest.raises(ConfigError, match=r"least_request.*choiceCount: must be <= 10, got 11"):
        get_policy("least_request", {"choiceCount": 11})
    with pytest.raises(ConfigError, match="unknown key 'x'"):
        get_policy("round_robin", {"x": 1})
    assert get_policy("least_request", {"choiceCount": 4}).choice_count == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["random", "version", "round_robin"])
def test_random_and_round_robin_are_even(name: str) -> None:
    picker = get_policy(name).build(ready("a", "b", "c", "d"))
    counts = spread(picker, 8000)
    # Expected 2000 each; binomial sd ~39, so +-250 is > 6 sd for random, exact for round_robin.
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(1750 <= c <= 2250 for c in counts.values()), counts
    if name == "round_robin":
        assert set(counts.values()) == {2000}
        turn = [picker.pick(CALL).subchannel for _ in range(8)]
        assert turn[:4] == turn[4:] and len(set(turn[:4])) == 4, "each in turn"


@pytest.mark.parametrize("name", ["random", "weighted_round_robin"])
def test_weighted_policies_follow_weights_and_weight_zero_gets_nothing(name: str) -> None:
    endpoints = [ep("a", weight=1), ep("b", weight=3), ep("c", weight=6), ep("d", weight=0)]
    counts = spread(get_policy(name).build(endpoints), 10000)
    assert "d" not in counts, "weight 0: drained"
    # Expected shares 10/30/60 %; sd of a share over 10,000 draws <= 0.5 %, bound 2 %.
    for node, expected in (("a", 0.1), ("b", 0.3), ("c", 0.6)):
        assert abs(share(counts, node) - expected) < 0.02, counts
    if name == "weighted_round_robin":
        assert counts == {"a": 1000, "b": 3000, "c": 6000}, "a whole number of cycles: exact"
