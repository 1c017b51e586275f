"""Every policy of ROUTING.md's table, pure: distributions with fixed seeds and stated bounds."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest
from policy_helpers import ep, ready, share, spread
from policy_helpers import node as make_node

from grpc_etcd.config import ConfigError
from grpc_etcd.policies import (
    POLICIES,
    DoneCallback,
    DoneInfo,
    LeastRequestPolicy,
    P2CEwmaPolicy,
    Policy,
    RingHashPolicy,
    get_policy,
    p2c_ewma,
)
from grpc_etcd.policies.ring_hash import hash64, point_key, ring_counts
from grpc_etcd.policies.weighted_round_robin import schedule
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


def test_every_weight_zero_means_equal_rather_than_an_outage() -> None:
    counts = spread(get_policy("random").build([ep("a", weight=0), ep("b", weight=0)]), 2000)
    assert set(counts) == {"a", "b"}


def test_weighted_round_robin_schedule_is_smooth() -> None:
    order = schedule([5, 1, 1])
    assert len(order) == 7 and Counter(order) == {0: 5, 1: 1, 2: 1}
    assert order[0] == 0 and order[-1] == 0, "the heavy node's turns are spread, not bunched"
    assert schedule([2, 4, 6]) == schedule([1, 2, 3]), "weights reduced by their gcd"


def test_pick_first_takes_the_first_by_address_whatever_the_order() -> None:
    endpoints = ready("a", "b", "c")
    first = min(endpoints, key=lambda e: e.node.address).subchannel
    for order in (endpoints, endpoints[::-1]):
        assert set(spread(get_policy("pick_first").build(order), 50)) == {first}


# ---------------------------------------------------------------- ring_hash


def _owners(policy: Policy, names: tuple[str, ...], keys: list[str]) -> dict[str, str]:
    picker = policy.build(ready(*names))
    return {
        key: picker.pick(CallInfo("/pkg.Api/Get", route={"hash_key": key})).subchannel
        for key in keys
    }


def test_ring_hash_keeps_a_key_on_its_node_and_gives_a_new_node_its_share() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    policy = get_policy("ring_hash")
    before = _owners(policy, ("a", "b", "c"), keys)
    assert before == _owners(policy, ("a", "b", "c"), keys), "same key, same node"
    assert before == _owners(get_policy("ring_hash"), ("c", "a", "b"), keys), "any instance, order"
    after = _owners(policy, ("a", "b", "c", "d"), keys)
    # A42's ring: 256 points a node (342 with three), so the new node takes about 1/4 of the
    # keys (+-6 % for 256 points) and the points the others lose move some keys among them.
    assert 0.19 < sum(owner == "d" for owner in after.values()) / len(keys) < 0.31
    assert _owners(policy, ("a", "b", "c"), keys) == before, "without it, every key is back"


def test_ring_hash_spreads_keys_by_weight_and_reads_the_header() -> None:
    policy = RingHashPolicy({"requestHashHeader": "X-User"})
    picker = policy.build([ep("a", weight=1), ep("b", weight=3)])
    counts = Counter(
        picker.pick(CallInfo("/m", metadata=(("x-user", f"u{i}"),))).subchannel for i in range(8000)
    )
    # Expected 25/75 %; 256 + 768 points keep it within +-5 %.
    assert abs(share(counts, "a") - 0.25) < 0.05, counts
    same = picker.pick(CallInfo("/m", metadata=(("x-user", b"u1"),))).subchannel
    assert same == picker.pick(CallInfo("/m", metadata=(("x-user", "u1"),))).subchannel
    # Two values of the header hash as grpc joins them: "u1,u2".
    both = CallInfo("/m", metadata=(("x-user", "u1"), ("x-user", "u2")))
    joined = CallInfo("/m", metadata=(("x-user", "u1,u2"),))
    assert all(picker.pick(both) == picker.pick(joined) for _ in range(20))
    # No key: a random node, both get calls.
    assert set(spread(picker, 400)) == {"a", "b"}


def test_ring_hash_is_a42s_ring() -> None:
    assert hash64(b"") == 0xEF46DB3751D8E999, "XXH64, seed 0"
    assert hash64("abc") == hash64(b"abc")
    assert ring_counts([1, 1, 1], 1024, 4096) == [342] * 3, "ceil(1024 / 3) each"
    assert ring_counts([1, 1, 1, 1], 1024, 4096) == [256] * 4
    assert ring_counts([1, 3], 1024, 4096) == [256, 768], "the lightest gets a whole count"
    assert ring_counts([1, 2], 16, 4096) == [6, 12]
    assert sum(ring_counts([1] * 10000, 1024, 4096)) == 4096, "never beyond maxRingSize"
    assert ring_counts([1, 1], 3000, 2048) == [1024, 1024], "maxRingSize wins"
    assert ring_counts([1, 1], 8000, 8000) == [2048, 2048], "grpc caps both sizes at 4096"
    assert point_key("127.0.0.1:80") == "127.0.0.1:80"
    assert point_key("[::0001]:80") == "[::1]:80", "as inet_ntop writes it"
    assert point_key("localhost:80") == "localhost:80"
    # The owner of a key is the first point at or after its hash.
    policy = RingHashPolicy()
    picker = policy.build(ready("a", "b"))
    points = sorted(
        (point, name)
        for name in ("a", "b")
        for point in policy.points(make_node(name).address, 512)
    )
    for key in ("k1", "k2", "k3", "user-9"):
        h = hash64(key)
        owner = next((name for point, name in points if point >= h), points[0][1])
        assert picker.pick(CallInfo("/m", route={"hash_key": key})).subchannel == owner


# ---------------------------------------------------------------- load-aware policies


def _simulate(policy: Policy, slow: str, calls: int, concurrency: int) -> Counter[str]:
    """Calls kept ``concurrency`` in flight; ``slow`` answers in 30 ms, the others in 1 ms.

    A discrete-event simulation on a fake clock: each done callback gets its call's latency.
    """
    clock = [0.0]
    if isinstance(policy, P2CEwmaPolicy):
        policy._clock = lambda: clock[0]  # the picker reads it at build time
    picker = policy.build(ready("a", "b", slow))
    latency = {"a": 0.001, "b": 0.001, slow: 0.030}
    running: list[tuple[float, int, DoneCallback, float]] = []
    counts: Counter[str] = Counter()
    for i in range(calls):
        while len(running) >= concurrency:
            clock[0], _, done, took = heapq.heappop(running)
            done(DoneInfo("OK", took))
        pick = picker.pick(CALL)
        counts[pick.subchannel] += 1
        assert pick.done is not None
        took = latency[pick.subchannel]
        heapq.heappush(running, (clock[0] + took, i, pick.done, took))
    for _, _, done, took in running:
        done(DoneInfo("OK", took))
    return counts


def test_least_request_moves_load_away_from_a_30x_slower_node() -> None:
    policy = LeastRequestPolicy()
    counts = _simulate(policy, "slow", 6000, concurrency=6)
    # Random would give it 1/3. (Under A48's draws with replacement the slow node would still
    # get every call whose two draws both land on it, 1/9 = 11 %; the draws are distinct now,
    # and the bound stays the one written for that: 15 %.)
    assert share(counts, "slow") < 0.15, counts
    assert all(policy.inflight(e.node.address) == 0 for e in ready("a", "b", "slow"))


def test_more_choices_move_more_load() -> None:
    counts = _simulate(LeastRequestPolicy({"choiceCount": 3}), "slow", 6000, concurrency=6)
    # Three choices of three nodes compare them all (with replacement, three draws all on the
    # slow node would be 1/27 = 3.7 %); bound 7 %.
    assert share(counts, "slow") < 0.07, counts


def test_least_request_counts_come_back_to_zero_and_survive_a_rebuild() -> None:
    policy = LeastRequestPolicy()
    picks = [policy.build(ready("a", "b")).pick(CALL) for _ in range(10)]
    address = {e.subchannel: e.node.address for e in ready("a", "b")}
    assert sum(policy.inflight(address[n]) for n in "ab") == 10
    policy.build(ready("a", "b"))  # a rebuild (a connectivity change) keeps the counts
    assert sum(policy.inflight(address[n]) for n in "ab") == 10
    for pick in picks:
        assert pick.done is not None
        pick.done(DoneInfo("OK", 0.001))
    assert sum(policy.inflight(address[n]) for n in "ab") == 0


def test_p2c_ewma_moves_load_away_from_a_30x_slower_node() -> None:
    counts = _simulate(P2CEwmaPolicy(), "slow", 6000, concurrency=6)
    # Random would give it 1/3; after its first slow answers it is only picked when forced
    # (once per FORCE_PICK of simulated time) or when both fast nodes are busy.
    assert share(counts, "slow") < 0.10, counts


def test_p2c_ewma_penalises_errors() -> None:
    clock = [0.0]
    policy = P2CEwmaPolicy(clock=lambda: clock[0])
    picker = policy.build(ready("a", "bad"))
    counts: Counter[str] = Counter()
    for _ in range(4000):
        clock[0] += 0.01  # 100 calls per simulated second
        pick = picker.pick(CALL)
        counts[pick.subchannel] += 1
        assert pick.done is not None
        pick.done(DoneInfo("UNAVAILABLE" if pick.subchannel == "bad" else "OK", 0.001))
    # Same latency; the failing node's success average drops below half within ~7 s of
    # simulated time, after which it gets only the forced pick once per second: < 10 %.
    assert share(counts, "bad") < 0.10, counts


# ---------------------------------------------------------------- a node that never answers


def _hung_node(policy: Policy, clock: list[float], calls: int = 400) -> int:
    """Issue 12's open loop on a fake clock: three nodes answer in 1 ms, then a fourth joins
    that accepts calls and never answers (each of its calls ends at the 2 s deadline); one
    call every 10 ms. Returns how many of the ``calls`` went to the hung node."""
    running: list[tuple[float, int, DoneCallback, DoneInfo]] = []

    def until(now: float) -> None:
        while running and running[0][0] <= now:
            clock[0], _, done, info = heapq.heappop(running)
            done(info)
        clock[0] = now

    def call(picker: object, number: int) -> str:
        pick = picker.pick(CALL)  # type: ignore[attr-defined]
        assert pick.done is not None
        if pick.subchannel == "hung":
            info, ends = DoneInfo("DEADLINE_EXCEEDED", 2.0), clock[0] + 2.0
        else:
            info, ends = DoneInfo("OK", 0.001), clock[0] + 0.001
        heapq.heappush(running, (ends, number, pick.done, info))
        return str(pick.subchannel)

    warm = policy.build(ready("a", "b", "c"))
    for number in range(50):
        until(number * 0.01)
        call(warm, number)
    picker = policy.build(ready("a", "b", "c", "hung"))
    lost = 0
    for number in range(50, 50 + calls):
        until(number * 0.01)
        lost += call(picker, number) == "hung"
    until(float("inf"))
    return lost


def test_p2c_ewma_a_node_with_calls_out_and_no_answer_is_not_free() -> None:
    clock = [0.0]
    policy = P2CEwmaPolicy(clock=lambda: clock[0])
    stats = policy._stats
    picker = policy.build(ready("a", "b"))
    address = {e.subchannel: e.node.address for e in ready("a", "b")}
    fast, fresh = stats.get(address["a"]), stats.get(address["b"])
    fast.calls.append(None)
    fast.finish(DoneInfo("OK", 0.001))  # a answered once, in 1 ms
    fresh.calls.append(None)  # b has a call out since t=0 and no answer yet
    fresh.since = 0.0
    clock[0] = 0.005
    assert fresh.load(clock[0]) > p2c_ewma.PENDING_PENALTY > fast.load(clock[0])
    # Once it has a latency, a call out for longer than it counts as that long already.
    fresh.lag, fresh.cost = 0.001, fast.cost
    clock[0] = 0.050
    assert fresh.load(clock[0]) == pytest.approx((0.050 * 1e9 + 1) ** 0.5 * 2)
    assert fresh.load(clock[0]) > 10 * fast.load(clock[0])  # 50x the latency, damped by the root
    # So a takes the calls until 10 of them are in flight, with no answer from either.
    assert {picker.pick(CALL).subchannel for _ in range(10)} == {"a"}


def test_p2c_ewma_loses_few_calls_to_a_node_that_never_answers() -> None:
    clock = [0.0]
    # Before calls in flight counted as latency paid, the fresh hung node cost 1 against ~1,000
    # for the others and won every pair it was in: ~half the calls of its first 2 s (~100).
    # Now: its first call, then none until its calls end (not forced while they are out),
    # then the forced pick once per FORCE_PICK: a handful. Bound 10 (issue 12's goal).
    assert _hung_node(P2CEwmaPolicy(clock=lambda: clock[0]), clock) <= 10


def test_least_request_loses_few_calls_to_a_node_that_never_answers() -> None:
    clock = [0.0]
    # With A48's draws with replacement the hung node would get every call whose two draws
    # both land on it: 1/16 of 400 = 25. Distinct draws leave it only the calls where it ties
    # for fewest in flight, before its calls pile up: bound 10 (issue 12's goal).
    assert _hung_node(LeastRequestPolicy(), clock) <= 10


def test_least_request_draws_distinct_candidates() -> None:
    # One call out on one of two nodes: distinct draws always compare both, so the other wins
    # every pick (with A48's replacement, both draws land on the busy node 1 time in 4).
    picker = LeastRequestPolicy().build(ready("a", "b"))
    busy = picker.pick(CALL).subchannel
    for _ in range(200):
        pick = picker.pick(CALL)
        assert pick.subchannel != busy and pick.done is not None
        pick.done(DoneInfo("OK", 0.001))
    # choiceCount >= nodes: every node is compared, so three calls out go to three nodes.
    many = LeastRequestPolicy({"choiceCount": 5}).build(ready("a", "b", "c"))
    assert len({many.pick(CALL).subchannel for _ in range(3)}) == 3
