"""policies/pick_first.py."""

from __future__ import annotations

from policy_helpers import ready, spread

from grpc_etcd.policies import get_policy


def test_pick_first_takes_the_first_by_address_whatever_the_order() -> None:
    endpoints = ready("a", "b", "c")
    first = min(endpoints, key=lambda e: e.node.address).subchannel
    for order in (endpoints, endpoints[::-1]):
        assert set(spread(get_policy("pick_first").build(order), 50)) == {first}
