"""Service name <-> key prefix mapping and instance ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.naming import (
    instance_key,
    new_instance_id,
    service_name,
    service_path,
    service_prefix,
    validate_dotted,
)


def test_seed_mapping() -> None:
    assert service_path("hwholiday.srv.app") == "/hwholiday/srv/app"
    assert service_prefix("hwholiday.srv.app") == "/hwholiday/srv/app/"
    assert service_name("hwholiday.srv.app") == "app"


def test_prefix_has_trailing_slash_so_app_never_matches_application() -> None:
    assert not "/hwholiday/srv/application/x".startswith(service_prefix("hwholiday.srv.app"))


def test_root_prefix() -> None:
    assert service_prefix("a.b", root="/prod") == "/prod/a/b/"
    assert service_prefix("a.b", root="prod/") == "/prod/a/b/"
    assert service_prefix("a.b", root="/") == "/a/b/"


def test_raw_etcd_target_is_kept() -> None:
    assert service_prefix("foo/bar/my-service") == "foo/bar/my-service/"
    assert service_name("foo/bar/my-service") == "my-service"


def test_instance_ids_look_like_the_originals() -> None:
    first, second = new_instance_id("hwholiday.srv.app"), new_instance_id("hwholiday.srv.app")
    assert first.startswith("app-") and len(first) == len("app-") + 36
    assert first != second
    assert instance_key("hwholiday.srv.app", first) == f"/hwholiday/srv/app/{first}"


@pytest.mark.parametrize("bad", ["", " ", "a..b", "a b", "a.$", ".a", "x//y"])
def test_bad_service_names(bad: str) -> None:
    with pytest.raises(ValueError, match="service"):
        service_prefix(bad)


def test_bad_instance_id() -> None:
    with pytest.raises(ValueError, match="instance id"):
        instance_key("a.b", "x/y")


@given(st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=5))
def test_name_prefix_round_trip(parts: list[str]) -> None:
    name = ".".join(parts)
    prefix = service_prefix(name)
    assert prefix.strip("/").replace("/", ".") == name
    assert service_name(name) == parts[-1]


@pytest.mark.parametrize("raw", ["hwholiday/srv/bad", "/hwholiday/srv/bad", "foo/bar/my-service"])
def test_only_dotted_names_are_registered(raw: str) -> None:
    dotted = raw.strip("/").replace("/", ".")
    with pytest.raises(ValueError, match=rf"must be dotted \(e.g. '{dotted}'\)"):
        validate_dotted(raw)
    assert validate_dotted(dotted) == dotted


@pytest.mark.parametrize(
    "name",
    ["a.grpc-etcd.b", "grpc-etcd.x", "a.b.grpc-etcd", "foo/grpc-etcd/x", "grpc-etcd/config/app"],
)
def test_grpc_etcd_is_no_part_of_a_service_name(name: str) -> None:
    """Keys of ``a.grpc-etcd.b`` would lie under ``/a/grpc-etcd/``, where the services of root
    ``/a`` keep their configs and client keys (and which ``grpc-etcd ls`` skips)."""
    with pytest.raises(ValueError, match=r"'grpc-etcd' is no part of a service name"):
        service_prefix(name)
    with pytest.raises(ValueError, match=r"'grpc-etcd' is no part of a service name"):
        validate_dotted(name.replace("/", "."))
    assert service_prefix("a.grpc-etcd2.b") == "/a/grpc-etcd2/b/", "a part that only looks alike"
