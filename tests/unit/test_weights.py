"""policies/_weights.py: node weights as the weighted policies read them."""

from __future__ import annotations

import random

import pytest
from policy_helpers import ep, spread

from grpc_etcd.policies import get_policy


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(7)


def test_every_weight_zero_means_equal_rather_than_an_outage() -> None:
    counts = spread(get_policy("random").build([ep("a", weight=0), ep("b", weight=0)]), 2000)
    assert set(counts) == {"a", "b"}
