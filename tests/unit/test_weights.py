"""policies/_weights.py: node weights as the weighted policies read them."""

from __future__ import annotations

import random

import pytest
from policy_helpers import ep, node, spread

from grpc_etcd.policies import Endpoint, get_policy
from grpc_etcd.policies._weights import weights_of


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(7)


def test_every_weight_zero_means_equal_rather_than_an_outage() -> None:
    counts = spread(get_policy("random").build([ep("a", weight=0), ep("b", weight=0)]), 2000)
    assert set(counts) == {"a", "b"}


def test_weights_of_reads_the_weight_label_or_says_there_is_none() -> None:
    assert weights_of([ep("a"), ep("b")]) is None, "no weight anywhere: all equal, unparsed"
    assert weights_of([ep("a", weight=3), ep("b"), ep("c", weight=0)]) == [3, 1, 0]
    odd = Endpoint(node("d", zone="z"), "d")
    assert odd.node.metadata == {"zone": "z"}
    assert weights_of([ep("a", weight=2), odd]) == [2, 1], "a node naming none counts as 1"
    assert weights_of([ep("a", weight=2), ep("x", weight="x")]) == [2, 1], "not an integer: 1"  # type: ignore[arg-type]
    assert weights_of([ep("a", weight=0), ep("b", weight=0)]) == [1, 1], "all drained: no outage"
