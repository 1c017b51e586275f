"""grpc_etcd.checks: a document against the registered nodes, and the shares it gives (pure)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import ep, node

from grpc_etcd.checks import Finding, Share, check_config, shares
from grpc_etcd.config import parse_config
from grpc_etcd.errors import ConfigError
from grpc_etcd.policies import Balancer, NoMatchError
from grpc_etcd.routing import CallInfo
from grpc_etcd.snapshot import Snapshot

FLEET = [
    node("a1", "v1", zone="a"),
    node("a2", "v1", zone="b"),
    node("b1", "v2", zone="a"),
    node("s1", "stable", zone="a"),
]


def split(*parts: tuple[dict[str, str], int], **extra: Any) -> dict[str, Any]:
    to = [{"subset": subset, "weight": weight} for subset, weight in parts]
    return {"routes": [{"to": to}], **extra}


def faults(document: dict[str, Any], nodes: list[Any] = FLEET) -> list[str]:
    return [str(finding) for finding in check_config(document, nodes)]


# ---------------------------------------------------------------- findings


def test_a_document_that_fits_the_registry_has_no_finding() -> None:
    document = split(({"version": "v1"}, 90), ({"version": "v2"}, 10), fallback=[{}])
    assert check_config(document, FLEET) == []
    assert check_config({}, FLEET) == [] and check_config({}, []) == []
    assert faults(split(({"version": "v1", "zone": "b"}, 1))) == []


def test_a_typod_label_key_is_named_with_what_was_meant() -> None:
    """Issue 13's outage: {"verison": "v1"} validated, was stored, and failed every call."""
    (finding,) = check_config(split(({"verison": "v1"}, 1)), FLEET)
    assert finding == Finding(
        "routes[0].to[0].subset",
        {"verison": "v1"},
        "no node has the label 'verison' - did you mean 'version'?",
    )
    assert str(finding) == (
        'routes[0].to[0].subset {"verison": "v1"}: no node has the label \'verison\' - did you '
        "mean 'version'?"
    )
    assert faults(split(({"colour": "red"}, 1))) == [
        'routes[0].to[0].subset {"colour": "red"}: no node has the label \'colour\' '
        "(labels: version, zone)"
    ]


def test_a_split_to_a_version_not_deployed_names_the_known_ones() -> None:
    """Issue 13: --split v1=50,v9=50 with no v9 server was stored with no word."""
    assert faults(split(({"version": "v1"}, 50), ({"version": "v9"}, 50))) == [
        'routes[0].to[1].subset {"version": "v9"}: no node has version \'v9\' '
        "(known: stable, v1, v2)"
    ]
    assert faults({"fallback": [{"version": "stabel"}, {}]}) == [
        'fallback[0] {"version": "stabel"}: no node has version \'stabel\' - did you mean '
        "'stable'?"
    ]
    assert faults(split(({"version": "v2", "zone": "b"}, 1))) == [
        'routes[0].to[0].subset {"version": "v2", "zone": "b"}: no node has version=v2 and '
        "zone=b together"
    ]


def test_a_subset_at_weight_0_may_name_a_version_to_come_but_not_a_typod_key() -> None:
    assert faults(split(({"version": "v1"}, 100), ({"version": "v9"}, 0))) == []
    assert faults(split(({"version": "v1"}, 100), ({"verison": "v9"}, 0))) == [
        'routes[0].to[1].subset {"verison": "v9"}: no node has the label \'verison\' - did you '
        "mean 'version'?"
    ]


def test_with_no_node_registered_every_selector_that_takes_calls_is_a_finding() -> None:
    document = split(({"version": "v1"}, 1), ({"version": "v2"}, 0), fallback=[{}])
    assert faults(document, []) == [
        'routes[0].to[0].subset {"version": "v1"}: matches no node: no node of the service is '
        "registered"
    ]
    (finding,) = check_config(document, Snapshot("hwholiday.srv.ap"))
    assert finding.fault == "matches no node: no node of hwholiday.srv.ap is registered"


def test_offline_nodes_match_nothing_and_a_snapshot_will_do() -> None:
    fleet = [node("o1", "v3", online=False), *FLEET]
    assert faults(split(({"version": "v3"}, 1)), fleet)[0].endswith(
        "no node has version 'v3' (known: stable, v1, v2)"
    )
    snapshot = Snapshot("s", {n.key or n.id: n for n in FLEET})
    assert check_config(split(({"version": "v2"}, 1)), snapshot) == []


def test_match_source_is_not_checked_it_names_the_callers_labels() -> None:
    document = {"routes": [{"match": {"source": {"servcie": "x"}}, "to": [{}]}]}
    assert check_config(document, FLEET) == []


def test_a_locality_key_no_node_carries_is_named_with_what_was_meant() -> None:
    """Issue 14: the channel routes without locality and warns once; the check says it before
    the document is stored."""
    assert faults({"locality": {"key": "zone", "mode": "prefer_local"}}) == []
    assert faults({"locality": {"key": "zoen", "mode": "zone_aware"}}) == [
        'locality {"key": "zoen"}: no node has the label \'zoen\', so calls would ignore '
        "locality - did you mean 'zone'?"
    ]
    (finding,) = check_config({"locality": {"key": "rack", "mode": "zone_aware"}}, FLEET)
    assert finding == Finding(
        "locality",
        {"key": "rack"},
        "no node has the label 'rack', so calls would ignore locality (labels: zone)",
    )
    # version is a record field, not a locality label; with no label at all, the hint says so
    assert faults({"locality": {"key": "version", "mode": "prefer_local"}}, [node("x1")]) == [
        'locality {"key": "version"}: no node has the label \'version\', so calls would ignore '
        "locality (no node has any label)"
    ]
    assert faults({"locality": {"key": "rack", "mode": "prefer_local"}}, []) == []


def test_an_invalid_document_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'weight'"):
        check_config({"routes": [{"to": [{"wieght": 1}]}]}, FLEET)


# ---------------------------------------------------------------- shares


def _by_subset(found: list[Share]) -> dict[str, float]:
    return {
        ("FAIL" if s.subset is None else "+".join(f"{k}={v}" for k, v in s.subset) or "any"): round(
            s.share, 6
        )
        for s in found
    }


def test_shares_of_a_split_and_its_fallbacks() -> None:
    assert _by_subset(shares({}, FLEET)) == {"any": 1.0}
    assert _by_subset(shares(split(({"version": "v1"}, 90), ({"version": "v2"}, 10)), FLEET)) == {
        "version=v1": 0.9,
        "version=v2": 0.1,
    }
    to_v9 = split(({"version": "v1"}, 50), ({"version": "v9"}, 50))
    assert _by_subset(shares(to_v9, FLEET)) == {"version=v1": 0.5, "FAIL": 0.5}
    caught = shares({**to_v9, "fallback": [{"version": "stable"}, {}]}, FLEET)
    assert _by_subset(caught) == {"version=v1": 0.5, "version=stable": 0.5}
    (fell,) = [s for s in caught if s.asked != s.subset]
    assert fell.asked == (("version", "v9"),) and [n.id for n in fell.nodes] == ["s1"]


def test_shares_name_the_calls_each_route_takes() -> None:
    document = {
        "routes": [
            {"match": {"headers": {"x-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
            {"to": [{"subset": {"version": "v1"}}]},
        ]
    }
    found = shares(document, FLEET)
    assert [(s.calls, s.share, [n.id for n in s.nodes]) for s in found] == [
        ("calls with header x-tier=beta", 1.0, ["b1"]),
        ("other calls", 1.0, ["a1", "a2"]),
    ]
    only_beta = {"routes": document["routes"][:1]}
    assert [s.calls for s in shares(only_beta, FLEET)] == [
        "calls with header x-tier=beta",
        "other calls",
    ]


_SUBSETS = st.sampled_from(
    [{}, {"version": "v1"}, {"version": "v2"}, {"version": "v9"}, {"zone": "a"}, {"zone": "c"}]
)
_DOCUMENTS = st.fixed_dictionaries(
    {
        "routes": st.lists(
            st.fixed_dictionaries(
                {
                    "to": st.lists(
                        st.fixed_dictionaries({"subset": _SUBSETS, "weight": st.integers(1, 100)}),
                        min_size=1,
                        max_size=3,
                    )
                }
            ),
            max_size=1,
        ),
        "fallback": st.lists(_SUBSETS, max_size=2),
    }
)


@settings(max_examples=200, deadline=None)
@given(_DOCUMENTS)
def test_shares_sum_to_one_and_no_call_fails_without_a_finding(document: dict[str, Any]) -> None:
    found = shares(document, FLEET)
    totals = Counter[str]()
    for share in found:
        totals[share.calls] += share.share
        assert all(share.subset is not None and _holds(share.subset, n) for n in share.nodes)
    assert all(abs(total - 1) < 1e-9 for total in totals.values())
    if not check_config(document, FLEET):
        assert all(share.subset is not None for share in found)


def _holds(subset: tuple[tuple[str, str], ...], n: Any) -> bool:
    labels = {**n.metadata, "version": n.version}
    return all(labels.get(k) == v for k, v in subset)


def test_shares_are_what_the_channels_balancer_draws() -> None:
    """The dry run's figures against the pure balancer the channels use: 20,000 picks, seed
    fixed; a share's sd is at most 0.35 points, the bound of 1.5 points is over 4 sd."""
    random.seed(13)
    document = split(
        ({"version": "v1"}, 60),
        ({"version": "v9"}, 30),
        ({"zone": "b"}, 10),
        fallback=[{"version": "stable"}],
    )
    endpoints = [ep(n.id, n.version, **dict(n.metadata)) for n in FLEET]
    picker = Balancer[str](parse_config(document)).build(endpoints)
    by_node = {n.id: n for n in FLEET}
    drawn = Counter[str]()
    for _ in range(20_000):
        try:
            drawn[by_node[picker.pick(CallInfo("/pkg.Api/Get")).subchannel].version] += 1
        except NoMatchError:
            drawn["FAIL"] += 1
    expected = Counter[str]()
    for share in shares(document, FLEET):
        for n in share.nodes:  # the random policy: uniform over the subset's nodes
            expected[n.version] += share.share / len(share.nodes)
    assert set(drawn) == set(expected)
    for version, fraction in expected.items():
        assert abs(drawn[version] / 20_000 - fraction) < 0.015, (version, drawn, expected)
