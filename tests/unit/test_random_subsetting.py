"""random_subsetting (gRFC A68, pure): rendezvous hashing moves at most one member, each channel
has its own salt, and a subset reaches for the next lowest hashes past unreachable members."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from policy_helpers import addresses as _addresses

from grpc_etcd.policies import RandomSubsettingPolicy
from grpc_etcd.policies._subsetting import take
from grpc_etcd.policies.random_subsetting import random_subset


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


def test_random_subsets_reach_for_the_next_lowest_hashes() -> None:
    addresses = _addresses(50)
    policy = RandomSubsettingPolicy({"subsetSize": 5})
    (ring,) = policy.rings(addresses, None)
    assert list(ring.order[:5]) == policy.subset(addresses, None) and len(ring.order) == 10
    assert take([ring], {ring.order[0]}) == list(ring.order[:6])
