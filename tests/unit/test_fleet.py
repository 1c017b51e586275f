"""policies/_fleet.py: the panic threshold and locality (prefer_local, zone_aware), pure."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest
from policy_helpers import ep, share, spread

from grpc_etcd.clients import Client, ClientView
from grpc_etcd.config import Locality, parse_config
from grpc_etcd.policies import Balancer, ConnState, Endpoint, NotReadyError, Picker, get_policy
from grpc_etcd.policies._fleet import (
    GroupRules,
    group_picker,
    prefer_local_share,
    zone_aware_shares,
)
from grpc_etcd.routing import CallInfo

FAILING = ConnState.TRANSIENT_FAILURE


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(17)


def _zone(prefix: str, zone: str, n: int, **kwargs: Any) -> list[Endpoint[str]]:
    return [ep(f"{prefix}{i}", zone=zone, **kwargs) for i in range(n)]


def _balanced(
    endpoints: Sequence[Endpoint[str]], document: dict[str, Any], zone: str = "a"
) -> Picker[str]:
    return Balancer[str](parse_config(document), zone=zone).build(endpoints)


def _local_share(picker: Picker[str], prefix: str = "a", n: int = 10000) -> float:
    counts = spread(picker, n)
    return sum(c for name, c in counts.items() if name.startswith(prefix)) / n


# ---------------------------------------------------------------- panic


def test_below_the_panic_threshold_every_ready_node_takes_calls() -> None:
    # 10 nodes: 3 usable, 4 READY but NOT_SERVING or ejected, 3 failing: 30 % usable.
    nodes = [
        *[ep(f"u{i}") for i in range(3)],
        ep("h0", serving=False),
        ep("h1", serving=False),
        ep("e0", ejected=True),
        ep("e1", ejected=True),
        *[ep(f"f{i}", state=FAILING) for i in range(3)],
    ]
    calm = _balanced(nodes, {"panicThreshold": 25, "loadBalancingConfig": [{"round_robin": {}}]})
    assert set(spread(calm, 60)) == {"u0", "u1", "u2"}, "30 % usable: above 25 %"
    panic = _balanced(nodes, {"panicThreshold": 50, "loadBalancingConfig": [{"round_robin": {}}]})
    assert set(spread(panic, 70)) == {"u0", "u1", "u2", "h0", "h1", "e0", "e1"}, "READY only"
    assert spread(panic, 7000)["h0"] == 1000, "round robin over all seven"
    off = _balanced(nodes, {"loadBalancingConfig": [{"round_robin": {}}]})
    assert set(spread(off, 60)) == {"u0", "u1", "u2"}, "0: off"


def test_panic_gives_calls_to_a_group_whose_nodes_are_all_unhealthy() -> None:
    nodes = [ep("h0", serving=False), ep("h1", serving=False), ep("f0", state=FAILING)]
    with pytest.raises(NotReadyError):
        _balanced(nodes, {}).pick(CallInfo("/m"))
    assert set(spread(_balanced(nodes, {"panicThreshold": 1}), 200)) == {"h0", "h1"}


# ---------------------------------------------------------------- prefer_local


def test_prefer_local_shares_are_envoys_overprovisioning() -> None:
    assert prefer_local_share(3, 3, 3, 3) == 1.0
    assert prefer_local_share(18, 25, 3, 3) == 1.0, "72 % usable: still all local"
    assert prefer_local_share(17, 25, 3, 3) == pytest.approx(1.4 * 17 / 25)
    assert prefer_local_share(1, 3, 3, 3) == pytest.approx(1.4 / 3), "about 47 %"
    assert prefer_local_share(0, 3, 3, 3) == 0.0
    assert prefer_local_share(1, 3, 0, 3) == 1.0, "nowhere else to go"
    # Both levels degraded: normalized, as Envoy's priority loads are.
    assert prefer_local_share(1, 3, 1, 5) == pytest.approx((1.4 / 3) / (1.4 / 3 + 1.4 / 5))


PREFER_LOCAL = {"locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 6}}


@pytest.mark.parametrize(
    ("usable", "expected"), [(3, 1.0), (2, 1.0 * min(1.0, 1.4 * 2 / 3)), (1, 1.4 / 3), (0, 0.0)]
)
def test_prefer_local_keeps_calls_local_while_enough_local_nodes_are_usable(
    usable: int, expected: float
) -> None:
    local = _zone("a", "a", usable) + _zone("x", "a", 3 - usable, state=FAILING)
    picker = _balanced(local + _zone("b", "b", 3), PREFER_LOCAL)
    # 10,000 picks: the sd of a share <= 0.5 points; bound 2 points.
    assert abs(_local_share(picker) - expected) < 0.02


def test_prefer_local_is_ignored_below_min_cluster_size_or_without_a_caller_zone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = _zone("a", "a", 2) + _zone("b", "b", 2)
    assert 0.45 < _local_share(_balanced(small, PREFER_LOCAL)) < 0.55, "4 < minClusterSize 6"
    fleet = _zone("a", "a", 3) + _zone("b", "b", 3)
    caplog.set_level(logging.WARNING, logger="grpc_etcd.routing")
    assert 0.45 < _local_share(_balanced(fleet, PREFER_LOCAL, zone="")) < 0.55
    assert "this channel has no 'zone'" in caplog.text
    by_source = Balancer[str](parse_config(PREFER_LOCAL), source={"zone": "b"}, zone="a")
    assert _local_share(by_source.build(fleet), "b") == 1.0, "source= wins over the env"


def test_a_locality_key_no_node_carries_and_an_empty_label_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="grpc_etcd.routing")
    balancer = Balancer[str](
        parse_config({"locality": {"key": "region", "mode": "prefer_local"}}), zone="a"
    )
    fleet = _zone("a", "a", 3) + _zone("b", "b", 3)
    for _ in range(3):
        assert len(spread(balancer.build(fleet), 600)) == 6, "routing goes on"
    assert caplog.text.count("no node carries the label 'region'") == 1
    caplog.clear()
    empty = Balancer[str](parse_config(PREFER_LOCAL), zone="a")
    empty.build([*fleet, ep("blank", zone="")])
    empty.build([*fleet, ep("blank", zone="")])
    assert caplog.text.count("empty 'zone' label") == 1


# ---------------------------------------------------------------- zone_aware


def test_zone_aware_shares_are_envoys_local_and_residual_shares() -> None:
    # The example: callers 2/3 in a, nodes 1/3 in a.
    assert zone_aware_shares("a", {"a": 2, "b": 1}, {"a": 1, "b": 2}) == (
        pytest.approx(0.5),
        {"b": pytest.approx(1 / 3)},
    )
    assert zone_aware_shares("b", {"a": 2, "b": 1}, {"a": 1, "b": 2}) == (1.0, {})
    # Envoy's comment: callers 40/40/20 %, nodes 25/50/25 %: residual 0, 10, 5.
    share, residual = zone_aware_shares("x", {"x": 4, "y": 4, "z": 2}, {"x": 1, "y": 2, "z": 1})  # type: ignore[misc]
    assert share == pytest.approx(25 / 40)
    assert residual == {"y": pytest.approx(0.1), "z": pytest.approx(0.05)}
    assert zone_aware_shares("a", {"a": 3}, {"a": 1, "b": 2}) is None, "one zone of callers"
    assert zone_aware_shares("a", {"a": 1, "b": 1}, {"b": 2}) is None, "one zone of nodes"
    assert zone_aware_shares("c", {"a": 1, "b": 1}, {"a": 1, "b": 1}) is None, "no caller in c"


def _zone_aware(callers: dict[str, int], zone: str, endpoints: list[Endpoint[str]]) -> Picker[str]:
    locality = Locality.model_validate({"mode": "zone_aware", "minClusterSize": 1})
    rules = GroupRules(get_policy("random"), 0.0, locality, zone, callers)
    picker = group_picker(endpoints, endpoints, rules)
    assert picker is not None
    return picker


def test_zone_aware_evens_the_load_over_every_node() -> None:
    """Callers 2/3 in a, nodes 1/3 in a: an a-caller sends 50 % locally, b-callers all."""
    nodes = _zone("a", "a", 2) + _zone("b", "b", 4)
    callers = {"a": 2, "b": 1}
    a_caller = spread(_zone_aware(callers, "a", nodes), 12000)
    b_caller = spread(_zone_aware(callers, "b", nodes), 12000)
    assert abs(share(a_caller, "a0") + share(a_caller, "a1") - 0.5) < 0.02
    assert share(b_caller, "a0") == 0.0
    # The fleet: two a-callers and one b-caller, each making 12,000 calls: every node gets
    # 1/6 of them (within 1.5 points).
    fleet = a_caller + a_caller + b_caller
    for name in ("a0", "a1", "b0", "b1", "b2", "b3"):
        assert abs(share(fleet, name) - 1 / 6) < 0.015, fleet


def test_zone_aware_in_the_balancer_follows_the_view_of_the_callers() -> None:
    config = parse_config({"locality": {"mode": "zone_aware", "minClusterSize": 3}})
    nodes = _zone("a", "a", 1) + _zone("b", "b", 2)
    balancer = Balancer[str](config, source={"zone": "a"})
    assert balancer.needs_clients, "zone_aware holds a client key"
    assert not Balancer[str](parse_config(PREFER_LOCAL)).needs_clients
    # No view yet: no zone-aware split, every node alike.
    assert abs(_local_share(balancer.build(nodes)) - 1 / 3) < 0.02
    me = Client("c1", {"zone": "a"})
    others = (Client("c2", {"zone": "a"}), Client("c3", {"zone": "b"}))
    balancer.update_clients(ClientView(me, others, revision=5))
    # Callers 2/3 in a, nodes 1/3 in a: half of this a-caller's calls stay in a.
    assert abs(_local_share(balancer.build(nodes)) - 0.5) < 0.02
    half = (Client("c3", {"zone": "b"}),)
    balancer.update_clients(ClientView(me, half, revision=6))
    assert abs(_local_share(balancer.build(nodes)) - 2 / 3) < 0.02, "(1/3) / (1/2) local"
    third = (Client("c3", {"zone": "b"}), Client("c4", {"zone": "b"}))
    balancer.update_clients(ClientView(me, third, revision=7))
    assert _local_share(balancer.build(nodes)) == 1.0, "1/3 of the callers, 1/3 of the nodes"
