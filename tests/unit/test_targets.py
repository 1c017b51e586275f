"""etcd:// target strings."""

from __future__ import annotations

import pytest

from grpc_etcd.targets import Target, parse_target


def test_full_target() -> None:
    assert parse_target(
        "etcd://10.0.0.1:2379,10.0.0.2:2379/hwholiday.srv.app?policy=version&version=v1&root=/prod"
    ) == Target(("10.0.0.1:2379", "10.0.0.2:2379"), "hwholiday.srv.app", "version", "v1", "/prod")


def test_defaults_and_raw_naming_target() -> None:
    target = parse_target("etcd://127.0.0.1:2379/foo/bar/my-service")
    assert (target.service, target.policy, target.version) == (
        "foo/bar/my-service",
        "version",
        None,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("dns://127.0.0.1:2379/a.b", "etcd://"),
        ("etcd:///a.b", "no etcd endpoint"),
        ("etcd://127.0.0.1:2379/", "no service"),
        ("etcd://127.0.0.1/a.b", "host:port"),
        ("etcd://127.0.0.1:2379/a.b?polcy=version", "unknown parameter"),
        ("etcd://127.0.0.1:2379/a.b?timeout=soon", "timeout"),
        ("etcd://127.0.0.1:2379/a b", "white space"),
    ],
)
def test_bad_targets(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(target)
