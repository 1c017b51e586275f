"""deterministic_subsetting and random_subsetting: the assignments and the balancer's use of
them (pure, no server). Balance and churn bounds are exact properties, checked by hypothesis;
the statistical ones use fixed seeds and say their bound."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_helpers import ep, spread

from grpc_etcd.clients import Client, ClientView
from grpc_etcd.config import parse_config
from grpc_etcd.errors import ConfigError
from grpc_etcd.policies import (
    Balancer,
    DeterministicSubsettingPolicy,
    Endpoint,
    RandomSubsettingPolicy,
    get_policy,
)
from grpc_etcd.policies.deterministic_subsetting import deterministic_subset
from grpc_etcd.policies.random_subsetting import random_subset
from grpc_etcd.routing import CallInfo


def _addresses(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return sorted({f"10.0.{rnd.randrange(256)}.{rnd.randrange(256)}:{8000 + i}" for i in range(n)})


def _subsets(clients: int, nodes: Sequence[str], size: int) -> list[set[str]]:
    return [set(deterministic_subset(nodes, (i, clients), size)) for i in range(clients)]


def _moved(before: Sequence[set[str]], after: Sequence[set[str]]) -> list[int]:
    return [len(b - a) for a, b in zip(before, after, strict=True)]


# ---------------------------------------------------------------- settings


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


# ---------------------------------------------------------------- deterministic


@given(
    clients=st.integers(1, 150),
    nodes=st.integers(1, 120),
    size=st.integers(1, 40),
)
def test_deterministic_subsets_balance_within_one_connection(
    clients: int, nodes: int, size: int
) -> None:
    addresses = [f"n{i:03}" for i in range(nodes)]
    subsets = _subsets(clients, addresses, size)
    assert all(len(s) == min(size, nodes) for s in subsets)
    per_node = Counter(a for s in subsets for a in s)
    counts = [per_node.get(a, 0) for a in addresses]
    exact = clients * min(size, nodes) / nodes
    assert max(counts) - min(counts) <= 1
    assert min(counts) >= int(exact) and max(counts) <= -int(-exact // 1)


@given(
    clients=st.integers(2, 120),
    nodes=st.integers(2, 120),
    size=st.integers(1, 30),
    where=st.floats(0, 1, exclude_max=True),
)
def test_a_node_joining_or_leaving_moves_at_most_two_members_of_any_subset(
    clients: int, nodes: int, size: int, where: float
) -> None:
    addresses = [f"n{i:04}" for i in range(0, 2 * nodes, 2)]
    joined = sorted([*addresses, f"n{int(where * 2 * nodes):04}x"])
    # Each slice shifts by at most one place, and may take in the newcomer besides.
    moved = _moved(_subsets(clients, addresses, size), _subsets(clients, joined, size))
    assert max(moved) <= 2
    left = _moved(_subsets(clients, joined, size), _subsets(clients, addresses, size))
    assert max(left) <= 2


def test_deterministic_churn_meets_the_goals_at_fleet_sizes() -> None:
    """Goal: a node or a client joining or leaving moves <= 1.5 members per client on average
    (fixed seed; the exact figures are benchmarks/fleet.py's)."""
    rnd = random.Random(5)
    for clients, nodes, size in [(300, 300, 25), (1000, 100, 25), (100, 100, 25), (60, 40, 8)]:
        addresses = _addresses(nodes)
        before = _subsets(clients, addresses, size)
        ids = sorted(f"{rnd.getrandbits(64):016x}" for _ in range(clients))
        newcomer = f"{rnd.getrandbits(64):016x}"
        place = sorted([*ids, newcomer]).index(newcomer)
        after = _subsets(clients + 1, addresses, size)
        del after[place]  # the newcomer's own subset is new, not moved
        assert statistics.mean(_moved(before, after)) <= 1.5
        gone = rnd.randrange(nodes)
        after = _subsets(clients, addresses[:gone] + addresses[gone + 1 :], size)
        assert statistics.mean(_moved(before, after)) <= 1.5


def test_the_place_comes_from_the_client_view() -> None:
    addresses = [f"n{i}" for i in range(10)]
    policy = get_policy("deterministic_subsetting", {"subsetSize": 2})
    assert isinstance(policy, DeterministicSubsettingPolicy)
    view = ClientView(Client("c"), (Client("a"), Client("b"), Client("d"), Client("e")), 3)
    assert view.index == 2 and view.count == 5
    assert policy.subset(addresses, view) == ["n4", "n5"]
    assert len(policy.subset(addresses, None)) == 2  # a stand-in place before any view
    assert policy.subset(addresses[:2], view) == ["n0", "n1"]


# ---------------------------------------------------------------- random (A68)


@given(
    nodes=st.integers(1, 80),
    size=st.integers(1, 30),
    salt=st.binary(min_size=1, max_size=32),
    which=st.integers(0, 10_000),
)
def test_a68_a_node_joining_or_leaving_changes_at_most_one_member(
    nodes: int, size: int, salt: bytes, which: int
) -> None:
    addresses = [f"10.0.0.{i}:1" for i in range(nodes + 1)]
    extra = addresses.pop(which % len(addresses))
    before = set(random_subset(addresses, salt, size))
    assert len(before) == min(size, nodes)
    joined = set(random_subset(sorted([*addresses, extra]), salt, size))
    assert len(joined - before) <= 1 and len(before - joined) <= 1
    left = set(random_subset(addresses[:-1], salt, size)) if nodes > 1 else set()
    assert len(left - before) <= 1


def test_a68_each_channel_has_its_own_salt() -> None:
    addresses = _addresses(100)
    first, second = RandomSubsettingPolicy({"subsetSize": 10}), RandomSubsettingPolicy()
    assert first.salt != second.salt
    assert first.subset(addresses, None) == first.subset(addresses, None)
    assert set(first.subset(addresses, None)) != set(
        RandomSubsettingPolicy().subset(addresses, None)
    )


# ---------------------------------------------------------------- the balancer


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
