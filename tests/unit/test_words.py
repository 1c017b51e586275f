"""_words.py: the nearest known word to a typo, as the config and the checks name it."""

from __future__ import annotations

from grpc_etcd._words import closest, did_you_mean

KEYS = ("loadBalancingConfig", "methodConfig", "routes", "fallback", "weight")


def test_case_underscores_and_dashes_are_ignored_first() -> None:
    assert closest("load_balancing_config", KEYS) == "loadBalancingConfig"
    assert closest("LOADBALANCINGCONFIG", KEYS) == "loadBalancingConfig"
    assert closest("method-config", KEYS) == "methodConfig"


def test_then_the_nearest_spelling_wins_or_none_is_near_enough() -> None:
    assert closest("wieght", KEYS) == "weight"
    assert closest("route", KEYS) == "routes"
    assert closest("fallbak", KEYS) == "fallback"
    assert closest("zzzz", KEYS) is None
    assert closest("weight", ()) is None


def test_a_known_word_is_not_its_own_suggestion() -> None:
    assert closest("routes", KEYS) is None
    assert closest("routes", (*KEYS, "route")) == "route"


def test_did_you_mean_is_a_suffix_for_an_error_or_nothing() -> None:
    assert (
        did_you_mean("round_robbin", ["round_robin", "random"]) == " - did you mean 'round_robin'?"
    )
    assert did_you_mean("qqq", ["round_robin", "random"]) == ""
