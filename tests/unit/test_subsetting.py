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
    ConnState,
    DeterministicSubsettingPolicy,
    Endpoint,
    RandomSubsettingPolicy,
    get_policy,
)
from grpc_etcd.policies._subsetting import Ring, Unreachable, Zones, take
from grpc_etcd.policies.deterministic_subsetting import deterministic_subset, zoned_rings
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


# ---------------------------------------------------------------- with a locality (zones)


def _zoned_fleet(callers: Sequence[int], nodes: Sequence[int]) -> tuple[list[str], dict[str, str]]:
    """Node addresses per zone, one subnet each (so address order groups the zones)."""
    of = {f"10.{z}.0.{j}:1": "abcd"[z] for z, n in enumerate(nodes) for j in range(n)}
    return sorted(of), of


def _zoned_subsets(
    callers: Sequence[int], nodes: Sequence[int], size: int
) -> tuple[list[tuple[str, list[str]]], dict[str, str]]:
    """Each caller's zone and subset, with the callers' places from one client view."""
    addresses, of = _zoned_fleet(callers, nodes)
    clients = [
        Client(f"{z}-{r:03}", {"zone": "abcd"[z]}) for z, m in enumerate(callers) for r in range(m)
    ]
    out = []
    for client in clients:
        zone = client.labels["zone"]
        view = ClientView(client, tuple(clients), 1)
        rings = zoned_rings(addresses, Zones("zone", zone, of), view.place("zone", zone), size)
        out.append((zone, take(rings, ())))
    return out, of


def test_a_zones_callers_are_ranked_among_themselves_and_the_zones_interleave() -> None:
    clients = (Client("a1", {"zone": "a"}), Client("b1", {"zone": "b"}), Client("b2"))
    view = ClientView(Client("a2", {"zone": "a"}), clients, 1)
    assert view.place() == (1, 4)
    # a2 is second of the two a-callers; zone a is the first of two zones: place (2*1+0)/4.
    assert view.place("zone", "a") == (2, 4)
    b2 = ClientView(Client("b2", {"zone": "b"}), (*clients[:2], Client("a2", {"zone": "a"})), 1)
    assert b2.place("zone", "b") == (3, 4), "second of b's two, shifted half a step"
    assert ClientView(Client("x")).place("zone", "a")[1] == 1 << 64, "a stand-in before a view"


@given(
    callers=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    nodes=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    size=st.integers(1, 30),
)
def test_zoned_subsets_balance_keep_a_local_node_and_hold_about_subset_size(
    callers: list[int], nodes: list[int], size: int
) -> None:
    """Every node is in ``M k / N`` subsets give or take less than one per zone of callers,
    when every zone of callers gets a window of at least one of its own nodes (else each
    caller keeps one local node anyway, at balance's expense); each subset holds a node of
    its caller's zone when there is one, and ``k`` nodes give or take one per zone beyond
    the first (at most one more)."""
    subsets, of = _zoned_subsets(callers, nodes, size)
    n, zones = len(of), sum(1 for count in nodes if count)
    if not n or not subsets:
        return
    for zone, subset in subsets:
        assert len(set(subset)) == len(subset)
        assert (size - zones + 1 <= len(subset) <= size + zones) if size < n else len(subset) == n
        assert any(of[a] == zone for a in subset) or zone not in of.values()
    per_node = Counter(a for _, subset in subsets for a in subset)
    counts = [per_node.get(a, 0) for a in of]
    exact = len(subsets) * min(size, n) / n
    caller_zones = [z for z, m in enumerate(callers) if m]
    if all(size * nodes[z] >= n for z in caller_zones if z < len(nodes) and nodes[z]):
        assert max(counts) - min(counts) <= len(caller_zones)
        assert all(abs(count - exact) < len(caller_zones) for count in counts)


def test_zoned_subsets_are_the_fleet_in_miniature_and_move_little() -> None:
    """300 callers x 300 nodes x 25 in three zones of one subnet each, callers 60/30/10 %,
    nodes 20/30/50 %: each subset holds each zone's share of 25 (within one), and a node or a
    client joining or leaving moves <= 1.5 members per client on average (fixed seed)."""
    rnd = random.Random(7)
    callers, nodes = (180, 90, 30), (60, 90, 150)
    subsets, of = _zoned_subsets(callers, nodes, 25)
    for _, subset in subsets:
        for other, share in zip("abc", (0.2, 0.3, 0.5), strict=True):
            assert abs(sum(1 for a in subset if of[a] == other) - 25 * share) < 1
    before = [set(s) for _, s in subsets]
    # a client of zone b joins (ids sort within their zone: b-090 is the last b)
    joined, _ = _zoned_subsets((180, 91, 30), nodes, 25)
    after = [set(s) for _, s in joined]
    del after[180 + 90]
    assert statistics.mean(_moved(before, after)) <= 1.5
    assert all(a == b for a, b in zip(before[:180], after[:180], strict=True)), "zone a unmoved"
    # a node of zone c leaves
    addresses, _ = _zoned_fleet(callers, nodes)
    gone = addresses[rnd.randrange(len(addresses))]
    clients = [
        Client(f"{z}-{r:03}", {"zone": "abcd"[z]}) for z, m in enumerate(callers) for r in range(m)
    ]
    left = [
        set(
            take(
                zoned_rings(
                    [a for a in addresses if a != gone],
                    Zones("zone", c.labels["zone"], of),
                    ClientView(c, tuple(clients), 1).place("zone", c.labels["zone"]),
                    25,
                ),
                (),
            )
        )
        for c in clients
    ]
    assert statistics.mean(_moved(before, left)) <= 1.5


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


def test_random_subsets_reach_for_the_next_lowest_hashes() -> None:
    addresses = _addresses(50)
    policy = RandomSubsettingPolicy({"subsetSize": 5})
    (ring,) = policy.rings(addresses, None)
    assert list(ring.order[:5]) == policy.subset(addresses, None) and len(ring.order) == 10
    assert take([ring], {ring.order[0]}) == list(ring.order[:6])


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
