"""deterministic_subsetting's assignment (pure): balance and churn bounds are exact properties,
checked by hypothesis; the fleet-sized ones use fixed seeds and say their bound. With a
locality, a window of each zone's ring."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st
from policy_helpers import addresses as _addresses

from grpc_etcd.clients import Client, ClientView
from grpc_etcd.policies import DeterministicSubsettingPolicy, get_policy
from grpc_etcd.policies._subsetting import Zones, take
from grpc_etcd.policies.deterministic_subsetting import deterministic_subset, zoned_rings


def _subsets(clients: int, nodes: Sequence[str], size: int) -> list[set[str]]:
    return [set(deterministic_subset(nodes, (i, clients), size)) for i in range(clients)]


def _moved(before: Sequence[set[str]], after: Sequence[set[str]]) -> list[int]:
    return [len(b - a) for a, b in zip(before, after, strict=True)]


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


@given(
    callers=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    nodes=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    size=st.integers(1, 30),
)
def test_zoned_subsets_hold_exactly_subset_size_and_their_own_zones_share(
    callers: list[int], nodes: list[int], size: int
) -> None:
    """ROUTING.md: every group keeps up to subsetSize nodes - with a locality too, exactly
    ``min(k, N)``. Its own zone's share ``q = k N_z / N`` rounded down or up (one when
    ``q < 1``); every other zone's within one per zone beyond the first."""
    subsets, of = _zoned_subsets(callers, nodes, size)
    n, per_zone = len(of), Counter(of.values())
    for zone, subset in subsets:
        assert len(subset) == min(size, n)
        if size >= n:
            continue
        held = Counter(of[a] for a in subset)
        for other, count in per_zone.items():
            share = size * count / n
            if other != zone:
                assert abs(held[other] - share) < len(per_zone), (other, held, share)
            elif share >= 1:
                assert math.floor(share) <= held[zone] <= math.ceil(share), (held, share)
            else:
                assert held[zone] == 1


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
