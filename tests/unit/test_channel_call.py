"""The per-call decisions both channels share (pure): the refusal table and its words."""

from __future__ import annotations

import pytest

from grpc_etcd._channel._call import (
    CLOSED,
    ChannelClosedError,
    ClosedPicker,
    Refusal,
    UnresolvedPicker,
    deadline_refusal,
    refusal,
)
from grpc_etcd.policies.base import NoMatchError, NotReadyError, PickError
from grpc_etcd.routing import CallInfo


def _call(*, wait_for_ready: bool = False, version: str | None = None) -> CallInfo:
    return CallInfo("/m", version, wait_for_ready=wait_for_ready)


@pytest.mark.parametrize(
    ("exc", "wait_for_ready", "waited", "expected"),
    [
        (NotReadyError(), False, False, None),  # connecting: wait
        (NotReadyError("all failing"), False, False, Refusal("UNAVAILABLE", "all failing")),
        (NotReadyError("all failing"), True, False, None),  # wait_for_ready waits it out
        (NoMatchError(), True, False, Refusal("UNAVAILABLE", "no match found conn")),
        (NoMatchError("no v9"), False, True, Refusal("UNAVAILABLE", "no v9")),
        (ChannelClosedError("closed"), False, False, CLOSED),
        (ChannelClosedError("closed"), False, True, Refusal("CANCELLED", "Channel closed!")),
        (PickError("odd"), False, False, Refusal("UNAVAILABLE", "odd")),
    ],
)
def test_refusal_table(
    exc: PickError, wait_for_ready: bool, waited: bool, expected: Refusal | None
) -> None:
    assert refusal(exc, _call(wait_for_ready=wait_for_ready), waited=waited) == expected


def test_closed_is_a_usage_error_not_a_status() -> None:
    assert CLOSED.code == ""


def test_pickers_of_a_closed_and_an_unresolved_channel() -> None:
    with pytest.raises(ChannelClosedError):
        ClosedPicker().pick(_call())
    with pytest.raises(NotReadyError) as raised:
        UnresolvedPicker("cannot resolve s: etcd down").pick(_call())
    assert raised.value.failure == "cannot resolve s: etcd down"
    assert refusal(raised.value, _call(), waited=False) == Refusal(
        "UNAVAILABLE", "cannot resolve s: etcd down"
    )
    assert refusal(raised.value, _call(wait_for_ready=True), waited=False) is None


def test_deadline_refusal_names_service_and_version() -> None:
    assert deadline_refusal("a.srv", _call(version="v2")) == Refusal(
        "DEADLINE_EXCEEDED", "Deadline Exceeded: no ready node of a.srv (version 'v2') in time"
    )
    assert "any version" in deadline_refusal("a.srv", _call()).details
