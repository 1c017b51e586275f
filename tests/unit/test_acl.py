"""The roles of grpc_etcd.registry.acl (pure): names, exact permissions, the plan of changes."""

from __future__ import annotations

import pytest

from grpc_etcd.config import config_key
from grpc_etcd.registry.acl import (
    KINDS,
    describe,
    permissions,
    plan,
    role_name,
)
from grpc_etcd.registry.etcd import Permission


def test_role_names_carry_the_root() -> None:
    assert role_name("a.srv.app", "server") == "grpc-etcd/a.srv.app/server"
    assert role_name("a.srv.app", "client", "/prod/") == "grpc-etcd/prod/a.srv.app/client"
    with pytest.raises(ValueError, match="kind must be one of server, client, operator"):
        role_name("a.srv.app", "admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service"):
        role_name("a..b", "server")


def test_each_kind_holds_exactly_its_job() -> None:
    shown = {kind: [describe(p) for p in permissions("a.srv.app", kind, "/r")] for kind in KINDS}
    assert shown == {
        "server": ["readwrite /r/a/srv/app/*"],
        "client": [
            "read /r/a/srv/app/*",
            "read /r/grpc-etcd/config/a.srv.app",
            "readwrite /r/grpc-etcd/clients/a.srv.app/*",
        ],
        "operator": ["readwrite /r/grpc-etcd/config/a.srv.app", "read /r/a/srv/app/*"],
        "xds": ["read /r/a/srv/app/*", "read /r/grpc-etcd/config/a.srv.app"],
    }


def test_prefixes_end_with_a_slash_so_a_longer_name_is_not_covered() -> None:
    (server,) = permissions("a.srv.app", "server")
    assert server == Permission("readwrite", b"/a/srv/app/", b"/a/srv/app0")
    assert not server.key <= b"/a/srv/application/x" < server.range_end
    client = permissions("a.srv.app", "client")
    assert Permission("read", config_key("a.srv.app").encode()) in client  # one key, no range
    assert (
        Permission("readwrite", b"/grpc-etcd/clients/a.srv.app/", b"/grpc-etcd/clients/a.srv.app0")
        in client
    )


def test_plan_turns_any_role_into_exactly_the_wanted_one() -> None:
    wanted = permissions("a.srv.app", "client")
    assert plan(wanted, wanted).empty
    fresh = plan((), wanted)
    assert fresh.revoke == () and fresh.grant == wanted
    widened = (*wanted, Permission("readwrite", b"/", b"0"))
    assert plan(widened, wanted).revoke == ((b"/", b"0"),)
    # a wanted range with the wrong access is granted again (etcd replaces it), not revoked
    wrong = (Permission("readwrite", wanted[0].key, wanted[0].range_end), *wanted[1:])
    fix = plan(wrong, wanted)
    assert fix.revoke == () and fix.grant == (wanted[0],)


def test_describe_a_range_that_is_neither_a_key_nor_a_prefix() -> None:
    assert describe(Permission("write", b"/a", b"/c")) == "write [/a, /c)"
    assert describe(Permission("read", b"\xff", b"\xff\x01")) == "read [\\xff, \\xff\\x01)"
