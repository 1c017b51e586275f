"""The decisions of one etcd request (registry/etcd/_outcomes.py), with no server: what
Session.call does after each failure, and how a refusal names what was refused."""

from __future__ import annotations

import random

import pytest

from grpc_etcd.backoff import Backoff
from grpc_etcd.registry.etcd import (
    AuthError,
    CompactedError,
    EtcdError,
    EtcdUnavailableError,
    LeaseNotFoundError,
)
from grpc_etcd.registry.etcd._outcomes import Attempts, Op, Step, error_for, refused

EP = "127.0.0.1:2379"
DENIED = "etcdserver: permission denied"


def _write(**kwargs: object) -> Attempts:
    return Attempts(idempotent=False, **kwargs)  # type: ignore[arg-type]


def test_a_stale_token_is_refreshed_once_then_refused() -> None:
    attempts = Attempts(idempotent=True, can_reauthenticate=True, op=Op("read", b"/k"), user="u")
    first = attempts.failed("UNAUTHENTICATED", "etcdserver: invalid auth token", EP)
    assert first.step is Step.REAUTHENTICATE and first.error is None
    second = attempts.failed("UNAUTHENTICATED", "etcdserver: invalid auth token", EP)
    assert second.step is Step.RAISE and isinstance(second.error, AuthError)


def test_without_credentials_an_empty_user_name_is_refused_at_once() -> None:
    decision = _write(op=Op("put", b"/a/x")).failed(
        "INVALID_ARGUMENT", "etcdserver: user name is empty", EP
    )
    assert decision.step is Step.RAISE and isinstance(decision.error, AuthError)
    assert str(decision.error).startswith(
        "cannot put /a/x: etcd has auth enabled and no user name and password were given"
    )


def test_a_write_that_never_left_goes_to_the_next_endpoint() -> None:
    attempts = _write()
    decision = attempts.failed("UNAVAILABLE", "failed to connect to all addresses", EP)
    assert decision.step is Step.NEXT_ENDPOINT and decision.suspect_connection
    assert not attempts.maybe_applied and attempts.failures == {
        EP: "UNAVAILABLE: failed to connect to all addresses"
    }


def test_a_write_that_may_have_been_applied_is_not_sent_again() -> None:
    decision = _write().failed("UNAVAILABLE", "Socket closed", EP)
    assert decision.step is Step.RAISE and decision.suspect_connection
    assert isinstance(decision.error, EtcdUnavailableError)
    assert "may or may not have been applied" in str(decision.error)


def test_a_read_is_sent_again_and_remembers_it_may_have_been_applied() -> None:
    attempts = Attempts(idempotent=True, not_found_ok_on_retry=True, lease_id=7)
    assert attempts.failed("UNAVAILABLE", "Socket closed", EP).step is Step.NEXT_ENDPOINT
    assert attempts.maybe_applied
    # the revoke went through the first time: its NOT_FOUND now means done
    assert attempts.failed("NOT_FOUND", "lease not found", "b:1").step is Step.DONE


def test_not_found_on_a_first_attempt_is_an_error() -> None:
    attempts = Attempts(idempotent=True, not_found_ok_on_retry=True, lease_id=7)
    decision = attempts.failed("NOT_FOUND", "etcdserver: requested lease not found", EP)
    assert decision.step is Step.RAISE and isinstance(decision.error, LeaseNotFoundError)
    assert decision.error.lease_id == 7


def test_a_deadline_on_a_write_is_not_retried() -> None:
    assert _write().failed("DEADLINE_EXCEEDED", "Deadline Exceeded", EP).step is Step.RAISE


def test_pause_backs_off_within_the_time_left_and_then_lists_every_failure() -> None:
    attempts = Attempts(idempotent=True, backoff=Backoff(0.05, 0.25, rng=random.Random(1)))
    attempts.cannot_connect("a:1")
    attempts.failed("UNAVAILABLE", "etcdserver: no leader", "b:2")
    assert 0 < attempts.pause(10.0, 5.0, ["a:1", "b:2"]) <= 0.25
    assert attempts.pause(0.01, 5.0, ["a:1", "b:2"]) <= 0.01
    with pytest.raises(EtcdUnavailableError) as info:
        attempts.pause(0.0, 5.0, ["a:1", "b:2"])
    message = str(info.value)
    assert "no etcd endpoint answered within 5 s" in message
    assert "a:1: cannot connect" in message and "b:2: UNAVAILABLE: etcdserver: no leader" in message
    assert info.value.endpoints == ("a:1", "b:2")


@pytest.mark.parametrize(
    ("op", "described"),
    [
        (Op("put", b"/sec/srv/other/x"), "put /sec/srv/other/x"),
        (Op("read", b"/sec/srv/app/", prefix=True), "read the keys under /sec/srv/app/"),
        (Op("watch", b"\0", prefix=True), "watch every key"),
        (Op("revoke", lease_id=0x1F), "revoke lease 0x1f"),
        (Op("grant a lease"), "grant a lease"),
        (Op("read", b"/bad/\xff"), "read /bad/\\xff"),
    ],
)
def test_ops_describe_themselves(op: Op, described: str) -> None:
    assert op.describe() == described


def test_a_permission_refusal_names_the_operation_the_key_and_the_user() -> None:
    attempts = _write(op=Op("put", b"/sec/srv/other/app-1"), user="srv")
    error = attempts.failed("PERMISSION_DENIED", DENIED, EP).error
    assert isinstance(error, AuthError)
    assert str(error) == (
        f"cannot put /sec/srv/other/app-1: permission denied for user srv [etcd {EP}]"
    )
    assert (error.operation, error.key, error.user, error.code) == (
        "put",
        "/sec/srv/other/app-1",
        "srv",
        "PERMISSION_DENIED",
    )


def test_a_wrong_password_names_the_user() -> None:
    error = refused(
        Op("authenticate as user alice"),
        "alice",
        "etcdserver: authentication failed, invalid user ID or password",
        endpoints=(EP,),
        code="INVALID_ARGUMENT",
    )
    assert str(error).startswith("authentication failed for user alice: wrong user name")


@pytest.mark.parametrize(
    ("code", "details", "cls"),
    [
        ("NOT_FOUND", "etcdserver: requested lease not found", LeaseNotFoundError),
        ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted", CompactedError),
        ("PERMISSION_DENIED", DENIED, AuthError),
        ("UNAVAILABLE", "x", EtcdUnavailableError),
        ("INTERNAL", "x", EtcdError),
    ],
)
def test_error_for_without_an_op_keeps_etcds_words(
    code: str, details: str, cls: type[EtcdError]
) -> None:
    error = error_for(code, details, EP)
    assert type(error) is cls and str(error) == f"{code}: {details} [etcd {EP}]"


def test_a_key_with_a_newline_keeps_the_message_on_one_line() -> None:
    error = _write(op=Op("put", b"/a/\nb\xff"), user="u").failed("PERMISSION_DENIED", DENIED, EP)
    assert str(error.error).startswith("cannot put /a/\\nb\\xff: permission denied for user u")
    assert "\n" not in str(error.error)
