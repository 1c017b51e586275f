"""errors.py: every public exception's kind and message - the key, the endpoints, the object."""

from __future__ import annotations

import pytest

from grpc_etcd.errors import (
    AuthError,
    ClosedError,
    CompactedError,
    ConfigError,
    DuplicateRegistrationError,
    EtcdClientClosedError,
    EtcdError,
    EtcdUnavailableError,
    GrpcEtcdError,
    LeaseNotFoundError,
    RecordError,
)


def test_bad_input_is_a_value_error_naming_its_key() -> None:
    record = RecordError("/svc/a", "no node.address")
    assert isinstance(record, ValueError) and isinstance(record, GrpcEtcdError)
    assert str(record) == "bad registry record at /svc/a: no node.address"
    assert (record.key, record.reason) == ("/svc/a", "no node.address")
    assert str(RecordError("", "x")) == "bad registry record at <no key>: x"
    config = ConfigError("/grpc-etcd/config/s", "routes[0].to: must have at least 1 item")
    assert isinstance(config, ValueError) and isinstance(config, GrpcEtcdError)
    assert str(config) == (
        "bad service config at /grpc-etcd/config/s: routes[0].to: must have at least 1 item"
    )
    assert str(ConfigError("", "x")) == "bad service config: x", "no key: code's own config"
    duplicate = DuplicateRegistrationError("/s/a")
    assert isinstance(duplicate, ValueError) and duplicate.key == "/s/a"
    assert str(duplicate).startswith("/s/a is already registered by another live lease")


def test_closed_is_a_runtime_error_naming_what_is_closed() -> None:
    closed = ClosedError("this Registry")
    assert isinstance(closed, RuntimeError) and closed.what == "this Registry"
    assert str(closed) == "this Registry is closed"
    assert (
        str(ClosedError("registration /s/a", "drained")) == "registration /s/a is closed (drained)"
    )


def test_etcd_errors_name_their_endpoints_and_keep_the_code() -> None:
    error = EtcdError("boom", endpoints=["127.0.0.1:2379", "127.0.0.1:2380"], code="INTERNAL")
    assert str(error) == "boom [etcd 127.0.0.1:2379, 127.0.0.1:2380]"
    assert error.endpoints == ("127.0.0.1:2379", "127.0.0.1:2380") and error.code == "INTERNAL"
    assert str(EtcdError("boom")) == "boom" and EtcdError("boom").code is None
    for kind in (EtcdUnavailableError, CompactedError, LeaseNotFoundError, AuthError):
        assert issubclass(kind, EtcdError) and issubclass(kind, GrpcEtcdError)
    compacted = CompactedError("gone", compact_revision=7, endpoints=["e:1"])
    assert compacted.compact_revision == 7 and str(compacted) == "gone [etcd e:1]"
    assert LeaseNotFoundError("no lease", lease_id=42).lease_id == 42


def test_an_auth_error_names_the_operation_the_key_and_the_user() -> None:
    error = AuthError(
        "cannot put /a/srv/b/x: permission denied for user srv",
        endpoints=["e:1"],
        code="PERMISSION_DENIED",
        operation="put",
        key="/a/srv/b/x",
        user="srv",
    )
    assert (error.operation, error.key, error.user) == ("put", "/a/srv/b/x", "srv")
    assert str(error) == "cannot put /a/srv/b/x: permission denied for user srv [etcd e:1]"
    plain = AuthError("invalid auth token")
    assert (plain.operation, plain.key, plain.user) == (None, None, None)


def test_a_closed_etcd_client_is_both_an_etcd_error_and_closed() -> None:
    error = EtcdClientClosedError("while watching", endpoints=["e:1"])
    assert isinstance(error, EtcdError) and isinstance(error, ClosedError)
    assert str(error) == "the etcd client is closed (while watching) [etcd e:1]"
    assert (error.what, error.endpoints, error.code) == ("the etcd client", ("e:1",), None)
    assert str(EtcdClientClosedError()) == "the etcd client is closed"
    with pytest.raises(ClosedError):
        raise EtcdClientClosedError()
