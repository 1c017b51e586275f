"""policies/ring_hash.py: gRFC A42's ring, keys kept on their node, weights and the header."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from policy_helpers import ep, ready, share, spread
from policy_helpers import node as make_node

from grpc_etcd.policies import Policy, RingHashPolicy, get_policy
from grpc_etcd.policies.ring_hash import hash64, point_key, ring_counts
from grpc_etcd.routing import CallInfo


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(7)


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
