"""policies/base.py: what a policy may use of an endpoint, and a picker's refusals."""

from __future__ import annotations

import dataclasses

import pytest
from policy_helpers import node

from grpc_etcd.policies.base import (
    NO_MATCH_DETAILS,
    ConnState,
    DoneInfo,
    Endpoint,
    NoMatchError,
    NotReadyError,
    Pick,
    PickError,
    QueuePicker,
    done_info,
)
from grpc_etcd.routing import CallInfo


@pytest.mark.parametrize("state", list(ConnState))
def test_an_endpoint_is_usable_only_ready_serving_and_not_ejected(state: ConnState) -> None:
    base = Endpoint(node("a"), "a", state)
    ready = state is ConnState.READY
    assert base.usable is ready
    assert Endpoint(node("a"), "a", state, serving=False).usable is False
    assert Endpoint(node("a"), "a", state, ejected=True).usable is False
    assert Endpoint(node("a"), "a").state is ConnState.IDLE, "a new sub-channel is IDLE"


def test_a_pick_is_its_subchannel_and_maybe_a_done_callback() -> None:
    assert Pick("a") == ("a", None)
    assert Pick("a").done is None


def test_no_match_has_the_go_originals_details_unless_told_others() -> None:
    error = NoMatchError()
    assert isinstance(error, PickError)
    assert error.details == NO_MATCH_DETAILS == str(error) == "no match found conn"
    assert NoMatchError("no node of version v9").details == "no node of version v9"


def test_not_ready_says_why_the_call_fails_or_waits() -> None:
    failing = NotReadyError("connection refused")
    assert isinstance(failing, PickError)
    assert (failing.failure, failing.reason, str(failing)) == (
        "connection refused",
        None,
        "connection refused",
    )
    waiting = NotReadyError(reason="reading the nodes from etcd")
    assert (waiting.failure, str(waiting)) == (None, "reading the nodes from etcd")
    assert str(NotReadyError()) == "no ready node yet"


def test_the_queue_picker_makes_every_call_wait_naming_what_for() -> None:
    with pytest.raises(NotReadyError) as info:
        QueuePicker("the first read of s").pick(CallInfo("/m/x"))
    assert info.value.failure is None and info.value.reason == "the first read of s"
    with pytest.raises(NotReadyError) as info:
        QueuePicker().pick(CallInfo("/m/x"))
    assert info.value.failure is None and info.value.reason is None


def test_done_info_made_for_the_hot_paths_is_a_frozen_done_info() -> None:
    info = done_info("OK", 0.25)
    assert type(info) is DoneInfo and info == DoneInfo("OK", 0.25)
    assert (info.code, info.latency) == ("OK", 0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.code = "UNAVAILABLE"  # type: ignore[misc]
