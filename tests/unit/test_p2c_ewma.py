"""policies/p2c_ewma.py: load moved away from a slow node, a failing one and one that never
answers (fake-clock simulations, fixed seed, stated bounds)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from policy_helpers import hung_node, ready, share, simulate

from grpc_etcd.policies import DoneInfo, P2CEwmaPolicy, p2c_ewma
from grpc_etcd.routing import CallInfo

CALL = CallInfo("/pkg.Api/Get")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(7)


def test_p2c_ewma_moves_load_away_from_a_30x_slower_node() -> None:
    counts = simulate(P2CEwmaPolicy(), "slow", 6000, concurrency=6)
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
    assert hung_node(P2CEwmaPolicy(clock=lambda: clock[0]), clock) <= 10
