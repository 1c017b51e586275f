"""The subsetting policies' shared half (policies/_subsetting.py): settings, the balancer's use
of the subsets (each group its own, the channel their union), reaching past unreachable
members and letting go of them, and subsets under a locality (pure, no server)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from policy_helpers import ep, spread

from grpc_etcd.clients import Client, ClientView
from grpc_etcd.config import parse_config
from grpc_etcd.errors import ConfigError
from grpc_etcd.policies import (
    Balancer,
    ConnState,
    DeterministicSubsettingPolicy,
    Endpoint,
    RandomSubsettingPolicy,
    get_policy,
)
from grpc_etcd.policies._subsetting import Ring, Unreachable, take
from grpc_etcd.routing import CallInfo


def test_settings_are_checked_naming_the_key() -> None:
    policy = get_policy("deterministic_subsetting", {"subsetSize": 3})
    assert isinstance(policy, DeterministicSubsettingPolicy)
    assert policy.subset_size == 3 and policy.child.name == "round_robin"
    child = {"childPolicy": [{"no_such": {}}, {"least_request": {"choiceCount": 3}}]}
    policy = get_policy("random_subsetting", child)
    assert isinstance(policy, RandomSubsettingPolicy) and policy.subset_size == 20  # A68's
    assert policy.child.name == "least_request"
    for settings, fault in [
        ({"subsetSize": 0}, r"subsetSize: must be >= 1, got 0"),
        ({"subsetSize": 1001}, r"subsetSize: must be <= 1000, got 1001"),
        ({"subsetSize": "5"}, r"subsetSize: must be an integer"),
        ({"childPolicy": []}, r"childPolicy: must have at least 1 item"),
        ({"childPolicy": [1]}, r"childPolicy: each entry must be an object"),
        ({"childPolicy": [{"x": {}}]}, r"childPolicy: .*names no policy we know"),
        (
            {"childPolicy": [{"random_subsetting": {}}]},
            r"random_subsetting cannot be the child of a subsetting policy",
        ),
        ({"childPolicy": [{"least_request": {"choiceCount": 1}}]}, r"choiceCount"),
    ]:
        with pytest.raises(ConfigError, match=fault):
            get_policy("deterministic_subsetting", settings)
        document = {"loadBalancingConfig": [{"random_subsetting": settings}]}
        with pytest.raises(
            ConfigError, match=r"at /k: loadBalancingConfig\[0\]: random_subsetting"
        ):
            parse_config(document, key="/k")


GET = CallInfo("/pkg.Api/Get")
CONFIG = {"loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 2}}]}


def _fleet() -> list[Endpoint[str]]:
    return [ep(f"a{i}", "v1") for i in range(6)] + [ep(f"b{i}", "v2") for i in range(3)]


def _balancer(index: int, count: int) -> Balancer[str]:
    balancer = Balancer[str](parse_config(CONFIG))
    others = tuple(Client(f"c{i}") for i in range(count) if i != index)
    balancer.update_clients(ClientView(Client(f"c{index}"), others, 1))
    return balancer


def test_each_group_keeps_its_subset_and_the_channel_connects_to_their_union() -> None:
    endpoints = _fleet()
    by_address = {e.node.address: e.subchannel for e in endpoints}
    balancer = _balancer(1, 3)
    wanted = balancer.plan(e.node for e in endpoints)
    assert wanted is not None
    names = {by_address[a] for a in wanted}

    # Client 1 of 3 starts a third of the way round each group's ring of addresses: every
    # group (every node, v1, v2) keeps 2 of its nodes.
    def ring(version: str = "") -> list[str]:
        return [by_address[a] for a in sorted(by_address) if by_address[a].startswith(version)]

    any_group = set(ring()[3:5])  # 9 nodes: start 3
    v1, v2 = set(ring("a")[2:4]), set(ring("b")[1:3])  # 6 nodes: start 2; 3 nodes: start 1
    assert names == any_group | v1 | v2
    connected = [e for e in endpoints if e.node.address in wanted]
    picker = balancer.build(connected)
    assert set(spread(picker, 200)) == any_group
    assert set(spread(picker, 200, CallInfo("/m", "v1"))) == v1
    assert set(spread(picker, 200, CallInfo("/m", "v2"))) == v2


def test_every_node_is_taken_by_the_fleet_and_none_twice_too_often() -> None:
    endpoints = _fleet()
    per_node = Counter(
        address
        for index in range(9)
        for address in _balancer(index, 9).plan(e.node for e in endpoints) or ()
    )
    assert len(per_node) == len(endpoints)


def test_a_new_view_or_config_moves_the_subsets() -> None:
    endpoints = _fleet()
    balancer = _balancer(0, 3)
    first = balancer.plan(e.node for e in endpoints)
    balancer.update_clients(ClientView(Client("c0"), (Client("a"), Client("b")), 2))
    second = balancer.plan(e.node for e in endpoints)
    assert first is not None and second is not None and first != second
    connected = [e for e in endpoints if e.node.address in second]
    assert {e.node.address for e in connected} == second
    picked = set(spread(balancer.build(connected), 400))
    assert len(picked) == 2, "unpinned calls stay in the ANY group's subset of 2"
    balancer.configure(parse_config({"loadBalancingConfig": [{"round_robin": {}}]}))
    assert balancer.plan(e.node for e in endpoints) is None, "no subsetting: every node"
    assert set(spread(balancer.build(endpoints), 400)) == {e.subchannel for e in endpoints}


# ---------------------------------------------------------------- reaching past unreachable nodes

TF, READY_, CONNECTING = ConnState.TRANSIENT_FAILURE, ConnState.READY, ConnState.CONNECTING


def test_a_subset_reaches_past_its_down_members_to_the_next_of_their_ring_at_most_keep_more() -> (
    None
):
    ring = Ring(("n1", "n2", "n3", "n4", "n5", "n6"), 3)
    assert take([ring], ()) == ["n1", "n2", "n3"]
    assert take([ring], {"n2"}) == ["n1", "n2", "n3", "n4"]
    assert take([ring], {"n2", "n4"}) == ["n1", "n2", "n3", "n4", "n5"]
    # every one down: one fresh subset more, never the whole ring
    assert take([ring], {"n1", "n2", "n3", "n4", "n5", "n6"}) == list(ring.order)
    long = Ring(tuple(f"m{i}" for i in range(10)), 2)
    assert take([long], {f"m{i}" for i in range(10)}) == ["m0", "m1", "m2", "m3"]
    # per zone: a local member is replaced by the next local node
    local, remote = Ring(("a1", "a2", "a3", "a4"), 2), Ring(("b1", "b2"), 1)
    assert take([local, remote], {"a1"}) == ["a1", "a2", "a3", "b1"]


def test_a_down_node_counts_until_it_has_been_ready_for_the_hold() -> None:
    seen = Unreachable(hold=10)
    seen.update({"x": READY_, "y": READY_}, 0)
    assert not seen.down and seen.recheck_at is None
    seen.update({"x": TF, "y": READY_}, 1)
    assert set(seen.down) == {"x"}
    # reconnect attempts of a dead node: still down, nothing to recheck
    for t, state in enumerate([ConnState.IDLE, CONNECTING, TF, CONNECTING], start=2):
        seen.update({"x": state, "y": READY_}, t)
        assert set(seen.down) == {"x"} and seen.recheck_at is None
    seen.update({"x": READY_, "y": READY_}, 10)
    assert set(seen.down) == {"x"} and seen.recheck_at == 20
    seen.update({"x": TF, "y": READY_}, 15)  # a flap within the hold: the clock starts again
    seen.update({"x": READY_, "y": READY_}, 16)
    assert seen.recheck_at == 26
    seen.update({"x": READY_, "y": READY_}, 25.9)
    assert "x" in seen.down
    seen.update({"x": READY_, "y": READY_}, 26)
    assert not seen.down and seen.recheck_at is None
    seen.update({"x": TF}, 30)
    seen.update({}, 31)
    assert not seen.down, "a node no longer connected is forgotten"


def _planned(balancer: Balancer[str], endpoints: Sequence[Endpoint[str]]) -> set[str]:
    wanted = balancer.plan(e.node for e in endpoints)
    assert wanted is not None
    by_address = {e.node.address: e.subchannel for e in endpoints}
    return {by_address[a] for a in wanted}


def test_the_balancer_widens_past_failing_members_and_shrinks_back_after_the_hold() -> None:
    endpoints = [ep(f"n{i}") for i in range(8)]
    address = {e.subchannel: e.node.address for e in endpoints}
    name = {a: n for n, a in address.items()}
    balancer = _balancer(0, 4)  # deterministic, subsetSize 2: client 0 of 4 takes n0, n1
    balancer.unreachable.hold = 5
    assert _planned(balancer, endpoints) == {"n0", "n1"}
    states = {address["n0"]: READY_, address["n1"]: READY_}

    def replan(t: float, **changed: ConnState) -> set[str]:
        states.update({address[n]: s for n, s in changed.items()})
        wanted = balancer.replan(states, t)
        assert wanted is not None
        for gone in set(states) - wanted:
            del states[gone]
        states.update({a: CONNECTING for a in wanted if a not in states})
        return {name[a] for a in wanted}

    assert replan(1, n1=TF) == {"n0", "n1", "n2"}
    assert replan(2, n2=TF) == {"n0", "n1", "n2", "n3"}
    assert replan(3, n3=TF) == {"n0", "n1", "n2", "n3"}, "at most subsetSize more"
    # the dead ones retry; the plan does not move with them
    assert replan(4, n1=CONNECTING, n2=CONNECTING, n3=ConnState.IDLE) == {"n0", "n1", "n2", "n3"}
    assert replan(5, n2=READY_, n3=READY_) == {"n0", "n1", "n2", "n3"}
    assert balancer.recheck_at == 10
    assert replan(10) == {"n0", "n1", "n2"}, "n2 back for 5 s: n3 is let go"
    assert replan(11, n1=READY_) == {"n0", "n1", "n2"}
    assert replan(12, n1=TF) == {"n0", "n1", "n2"}, "a flap within the hold moves nothing"
    assert replan(13, n1=READY_) == {"n0", "n1", "n2"}
    assert replan(18) == {"n0", "n1"}
    # build: the subset's groups hold the replacement, so calls reach it
    replan(20, n0=TF)
    connected = [e for e in endpoints if e.subchannel in {"n0", "n1", "n2"}]
    connected[0] = ep("n0", state=TF)
    assert set(spread(balancer.build(connected), 100)) == {"n1", "n2"}


def test_with_a_locality_every_subset_keeps_local_nodes_and_prefer_local_uses_them() -> None:
    """Issue 14: consecutive slices of an address-ordered ring held a single zone's nodes, so a
    caller could have none of its own. With a locality each zone is a ring of its own."""
    fleet = [ep(f"za{i}", zone="a") for i in range(6)] + [ep(f"zb{i}", zone="b") for i in range(6)]
    document = {
        "locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 2},
        "loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 4}}],
    }
    callers = [Client(f"c{i}", {"zone": "ab"[i % 2]}) for i in range(6)]
    held: Counter[str] = Counter()
    for caller in callers:
        zone = caller.labels["zone"]
        balancer = Balancer[str](parse_config(document), source={"zone": zone})
        balancer.update_clients(ClientView(caller, tuple(callers), 1))
        subset = _planned(balancer, fleet)
        held.update(subset)
        assert sum(1 for name in subset if name[1] == zone) == 2, subset
        picker = balancer.build([e for e in fleet if e.subchannel in subset])
        assert {name[1] for name in spread(picker, 200)} == {zone}, "all local"
    assert set(held.values()) == {2}, "6 callers x 4 over 12 nodes: 2 each"
    # without the locality, the same slices are consecutive: some hold one zone only
    plain = {**document, "locality": None}
    balancer = Balancer[str](parse_config(plain))
    balancer.update_clients(ClientView(callers[0], tuple(callers), 1))
    assert {name[1] for name in _planned(balancer, fleet)} == {"a"}


def test_zone_aware_over_subsets_weighs_the_zones_by_the_whole_group() -> None:
    """A subset holds each zone's share of subsetSize only to the nearest node (here 1 or 2
    of 4 a-nodes' share of 5 = 1.67): zone_aware weighs the zones by the group's sizes, so
    callers 2/3 in a, nodes 1/3 in a still send 50 % locally (Envoy's shares). 4,000 picks,
    seed 3: sd 0.8 points, bound 4."""
    random.seed(3)
    fleet = [ep(f"wa{i}", zone="a") for i in range(4)] + [ep(f"wb{i}", zone="b") for i in range(8)]
    document = {
        "locality": {"key": "zone", "mode": "zone_aware", "minClusterSize": 2},
        "loadBalancingConfig": [{"deterministic_subsetting": {"subsetSize": 5}}],
    }
    callers = [Client(f"c{i}", {"zone": zone}) for i, zone in enumerate("aaaabb")]
    for caller in callers:
        zone = caller.labels["zone"]
        balancer = Balancer[str](parse_config(document), source={"zone": zone})
        balancer.update_clients(ClientView(caller, tuple(callers), 1))
        subset = _planned(balancer, fleet)
        picks = spread(balancer.build([e for e in fleet if e.subchannel in subset]), 4000)
        local = sum(n for name, n in picks.items() if name[1] == zone) / 4000
        assert abs(local - (0.5 if zone == "a" else 1.0)) < 0.04, (caller.id, subset, local)
