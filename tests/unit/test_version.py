"""The version policy's picker, pure: no server, no channel."""

from __future__ import annotations

from collections import Counter

import pytest

from grpc_etcd.node import Node
from grpc_etcd.policies import (
    NO_MATCH_DETAILS,
    ConnState,
    Endpoint,
    NoMatchError,
    NotReadyError,
    VersionPolicy,
    get_policy,
)
from grpc_etcd.routing import CallInfo


def endpoint(
    name: str, version: str, state: ConnState = ConnState.READY, error: str | None = None
) -> Endpoint[str]:
    return Endpoint(Node("s", name, "127.0.0.1:1", version), name, state, error)


def test_each_version_goes_to_its_own_nodes_and_spreads() -> None:
    picker = VersionPolicy().build(
        [endpoint("a1", "v1"), endpoint("a2", "v1"), endpoint("b1", "v2")]
    )
    counts = Counter(picker.pick(CallInfo("/m", version="v1")).subchannel for _ in range(2000))
    assert set(counts) == {"a1", "a2"}
    assert min(counts.values()) > 800
    assert {picker.pick(CallInfo("/m", version="v2")).subchannel for _ in range(50)} == {"b1"}
    assert {picker.pick(CallInfo("/m")).subchannel for _ in range(200)} == {"a1", "a2", "b1"}


def test_no_match() -> None:
    picker = VersionPolicy().build([endpoint("a1", "v1")])
    with pytest.raises(NoMatchError) as info:
        picker.pick(CallInfo("/m", version="v3"))
    assert info.value.details == NO_MATCH_DETAILS == "no match found conn"


def test_empty_set_is_no_match_even_without_version() -> None:
    with pytest.raises(NoMatchError):
        VersionPolicy().build([]).pick(CallInfo("/m"))


def test_wait_for_ready_waits_for_a_match_instead_of_failing() -> None:
    with pytest.raises(NotReadyError):
        VersionPolicy().build([endpoint("a1", "v1")]).pick(
            CallInfo("/m", version="v3", wait_for_ready=True)
        )


def test_matching_nodes_still_connecting_mean_wait() -> None:
    picker = VersionPolicy().build(
        [endpoint("a1", "v1"), endpoint("b1", "v2", ConnState.CONNECTING)]
    )
    with pytest.raises(NotReadyError) as info:
        picker.pick(CallInfo("/m", version="v2"))
    assert info.value.failure is None


def test_all_matching_in_transient_failure_carry_the_error() -> None:
    picker = VersionPolicy().build(
        [
            endpoint("b1", "v2", ConnState.TRANSIENT_FAILURE, "connection refused"),
            endpoint("b2", "v2", ConnState.TRANSIENT_FAILURE, None),
            endpoint("a1", "v1", ConnState.CONNECTING),
        ]
    )
    with pytest.raises(NotReadyError) as info:
        picker.pick(CallInfo("/m", version="v2"))
    assert info.value.failure == "connection refused"
    with pytest.raises(NotReadyError) as info:
        picker.pick(CallInfo("/m"))
    assert info.value.failure is None, "a1 is still connecting, so no-version calls wait"


def test_get_policy() -> None:
    assert get_policy("version").name == "version"
    with pytest.raises(ValueError, match="unknown balancing policy 'nope'"):
        get_policy("nope")


def test_two_nodes_at_one_address_share_one_subchannel_without_double_share() -> None:
    shared = Endpoint(Node("s", "old", "127.0.0.1:1", "v1"), "sub-a", ConnState.READY)
    again = Endpoint(Node("s", "new", "127.0.0.1:1", "v2"), "sub-a", ConnState.READY)
    other = endpoint("b", "v1")
    picker = VersionPolicy().build([shared, again, other])
    counts = Counter(picker.pick(CallInfo("/m")).subchannel for _ in range(4000))
    assert set(counts) == {"sub-a", "b"}
    assert 1600 < counts["sub-a"] < 2400, counts
