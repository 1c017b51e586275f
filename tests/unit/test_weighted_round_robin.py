"""policies/weighted_round_robin.py: the smooth schedule (its distribution is checked with
random's in test_policies.py)."""

from __future__ import annotations

from collections import Counter

from grpc_etcd.policies.weighted_round_robin import schedule


def test_weighted_round_robin_schedule_is_smooth() -> None:
    order = schedule([5, 1, 1])
    assert len(order) == 7 and Counter(order) == {0: 5, 1: 1, 2: 1}
    assert order[0] == 0 and order[-1] == 0, "the heavy node's turns are spread, not bunched"
    assert schedule([2, 4, 6]) == schedule([1, 2, 3]), "weights reduced by their gcd"
