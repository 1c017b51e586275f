"""grpc-etcd acl on a real etcd with auth: each kind of user does its job, every other write is
refused with a message naming the operation, the key and the user."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from waiting import wait_for

import grpc_etcd
from grpc_etcd.cli import main
from grpc_etcd.clients import clients_prefix
from grpc_etcd.config import config_key
from grpc_etcd.registry import RegistrationState
from grpc_etcd.registry.acl import role_name
from grpc_etcd.registry.etcd import AuthError, EtcdClient
from grpc_etcd.testing import EtcdServer

Factory = Callable[..., EtcdServer]
SERVICE = "sec.srv.app"
OTHER = "sec.srv.other"
PASSWORD = "pw"
DOCUMENT = {"loadBalancingConfig": [{"round_robin": {}}]}
SUBSETTING = {
    "loadBalancingConfig": [
        {"deterministic_subsetting": {"subsetSize": 2, "childPolicy": [{"round_robin": {}}]}}
    ]
}


def _cli(etcd: EtcdServer, user: str, *args: str, root: str = "") -> Result:
    base = ["--etcd", etcd.endpoint, "--user", user, "--password", PASSWORD]
    return CliRunner().invoke(main, [*base, *(["--root", root] if root else []), *args])


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


@pytest.fixture
def etcd(etcd_factory: Factory) -> EtcdServer:
    """An etcd with auth on, users srv, web and ops, and their roles for SERVICE."""
    server = etcd_factory(auth=("root", PASSWORD))
    for user in ("srv", "web", "ops"):
        server.etcdctl("user", "add", f"{user}:{PASSWORD}")
    granted = _cli(
        server, "root", "acl", "grant", SERVICE, "--server", "srv", "--client", "web",
        "--operator", "ops",
    )  # fmt: skip
    _ok(granted)
    return server


def _registry(etcd: EtcdServer, user: str) -> grpc_etcd.Registry:
    return grpc_etcd.Registry(etcd.endpoint, username=user, password=PASSWORD)


def _client(etcd: EtcdServer, user: str) -> EtcdClient:
    return EtcdClient(etcd.endpoint, username=user, password=PASSWORD)


def _refused(user: str, op: str, key: str) -> str:
    return rf"^cannot {op} {re.escape(key)}: permission denied for user {user} "


def test_grant_is_idempotent_and_show_lists_roles_and_users(etcd: EtcdServer) -> None:
    again = _ok(_cli(etcd, "root", "acl", "grant", SERVICE, "--server", "srv"))
    assert again.splitlines() == [
        f"{role_name(SERVICE, 'server')} (as it was): readwrite /sec/srv/app/*",
        f"granted {role_name(SERVICE, 'server')} to srv",
    ]
    shown = _ok(_cli(etcd, "root", "acl", "show", SERVICE))
    assert "server    grpc-etcd/sec.srv.app/server  users: srv\n" in shown
    assert "          readwrite /sec/srv/app/*\n" in shown
    assert "client    grpc-etcd/sec.srv.app/client  users: web\n" in shown
    assert "          read /grpc-etcd/config/sec.srv.app\n" in shown
    assert "          readwrite /grpc-etcd/clients/sec.srv.app/*\n" in shown
    assert "operator  grpc-etcd/sec.srv.app/operator  users: ops\n" in shown
    assert "differs" not in shown
    report = json.loads(_ok(_cli(etcd, "root", "acl", "show", SERVICE, "--json")))
    assert report["client"]["users"] == ["web"] and report["client"]["as_granted"]
    other = json.loads(_ok(_cli(etcd, "root", "acl", "show", OTHER, "--json")))
    assert not other["server"]["exists"] and other["server"]["users"] == []


def test_grant_resets_a_role_that_was_widened_by_hand(etcd: EtcdServer) -> None:
    role = role_name(SERVICE, "server")
    etcd.etcdctl("role", "grant-permission", role, "--prefix=true", "readwrite", "/")
    shown = _ok(_cli(etcd, "root", "acl", "show", SERVICE))
    assert "readwrite /*" in shown and "differs from what 'acl grant' sets" in shown
    assert "(set)" in _ok(_cli(etcd, "root", "acl", "grant", SERVICE, "--server", "srv"))
    assert "differs" not in _ok(_cli(etcd, "root", "acl", "show", SERVICE))


def test_revoke_takes_one_role_back(etcd: EtcdServer) -> None:
    revoked = _ok(_cli(etcd, "root", "acl", "revoke", SERVICE, "--client", "web"))
    assert revoked == f"revoked {role_name(SERVICE, 'client')} from web\n"
    again = _ok(_cli(etcd, "root", "acl", "revoke", SERVICE, "--client", "web"))
    assert again == f"web does not hold {role_name(SERVICE, 'client')}\n"
    with _client(etcd, "web") as web, pytest.raises(AuthError):
        web.get_prefix("/sec/srv/app/")
    report = json.loads(_ok(_cli(etcd, "root", "acl", "show", SERVICE, "--json")))
    assert report["client"]["users"] == [] and report["server"]["users"] == ["srv"]


def test_bad_requests_are_one_line(etcd: EtcdServer) -> None:
    missing = _one_line_error(_cli(etcd, "root", "acl", "grant", SERVICE, "--client", "nobody"))
    assert "etcd has no user 'nobody': create it first" in missing
    assert "at least one user" in _one_line_error(_cli(etcd, "root", "acl", "grant", SERVICE))
    assert "must be dotted" in _one_line_error(
        _cli(etcd, "root", "acl", "grant", "a/b", "--server", "srv")
    )
    not_root = _one_line_error(_cli(etcd, "srv", "acl", "grant", OTHER, "--server", "srv"))
    assert "permission denied for user srv" in not_root and "--user root" in not_root


def test_a_wrong_password_or_user_is_said_without_the_wrong_advice(etcd: EtcdServer) -> None:
    """root with a wrong password was told to use --user root; a revoke from a user that does
    not exist, to create the user first."""
    base = ["--etcd", etcd.endpoint, "--user", "root", "--password", "wrong"]
    bad = _one_line_error(CliRunner().invoke(main, [*base, "acl", "show", SERVICE]))
    assert "authentication failed for user root" in bad and "--user root" not in bad
    gone = _one_line_error(_cli(etcd, "root", "acl", "revoke", SERVICE, "--client", "nobody"))
    assert "etcd has no user 'nobody'" in gone and "create it" not in gone


def test_a_server_registers_and_writes_nothing_else(etcd: EtcdServer, tmp_path: Path) -> None:
    with _registry(etcd, "srv") as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5001", ttl=2)
        assert reg.state is RegistrationState.REGISTERED
        with _client(etcd, "srv") as srv:
            # a lease of srv's own, kept alive for longer than its TTL: not lost
            ka = srv.keep_alive(srv.lease_grant(2), 2)
            assert not ka.wait_lost(3.0)
        with _client(etcd, "root") as root:  # so the registration's lease was renewed too
            assert reg.state is RegistrationState.REGISTERED and root.get(reg.key) is not None
        with pytest.raises(AuthError, match=r"^cannot (read|put) /sec/srv/other/"):
            registry.register(OTHER, address="127.0.0.1:5002", ttl=2)
        reg.close()  # delete its key and revoke its lease: its own keys only
        assert registry.nodes(SERVICE) == []
    with _client(etcd, "srv") as srv:
        with pytest.raises(AuthError, match=_refused("srv", "put", "/sec/srv/other/x")) as info:
            srv.put("/sec/srv/other/x", "v")
        assert (info.value.operation, info.value.key, info.value.user) == (
            "put",
            "/sec/srv/other/x",
            "srv",
        )
        with pytest.raises(AuthError, match=_refused("srv", "put", config_key(SERVICE))):
            srv.put(config_key(SERVICE), json.dumps(DOCUMENT))
    path = tmp_path / "app.json"
    path.write_text(json.dumps(DOCUMENT))
    line = _one_line_error(_cli(etcd, "srv", "config", "set", SERVICE, str(path)))
    # config set reads the stored document first (to write over that one only): refused there
    assert f"cannot read {config_key(SERVICE)}: permission denied for user srv" in line


def test_a_client_discovers_and_follows_config_and_registers_nothing(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps(DOCUMENT))
    with _registry(etcd, "srv") as servers, _registry(etcd, "web") as clients:
        reg = servers.register(SERVICE, address="127.0.0.1:5001", version="v1")
        channel = clients.channel(SERVICE)
        subsetting = clients.channel(SERVICE, config=SUBSETTING)  # holds a leased client key
        try:
            assert [n.id for n in clients.nodes(SERVICE)] == [reg.node.id]
            wait_for(lambda: channel.snapshot is not None and len(channel.snapshot), 10, "nodes")
            with _client(etcd, "root") as root:
                prefix = clients_prefix(SERVICE)
                wait_for(lambda: root.get_prefix(prefix)[0], 10, "the channel's client key")
            _ok(_cli(etcd, "ops", "config", "set", SERVICE, str(path)))
            wait_for(lambda: channel.config.policy_name == "round_robin", 10, "the new config")
        finally:
            channel.close()
            subsetting.close()
        with pytest.raises(AuthError, match=r"^cannot put /sec/srv/app/app-.*: permission denied"):
            clients.register(SERVICE, address="127.0.0.1:5003")
    with _client(etcd, "web") as web:
        lease = web.lease_grant(5)
        web.put(clients_prefix(SERVICE) + "web-1", "{}", lease=lease)  # its subsetting key
        with pytest.raises(AuthError, match=_refused("web", "put", config_key(SERVICE))):
            web.put(config_key(SERVICE), "{}")
        with pytest.raises(AuthError, match=_refused("web", "put", "/sec/srv/other/x")):
            web.put("/sec/srv/other/x", "v")
        other_clients = clients_prefix(OTHER) + "web-1"
        with pytest.raises(AuthError, match=_refused("web", "put", other_clients)):
            web.put(other_clients, "{}", lease=lease)
        web.lease_revoke(lease)
    line = _one_line_error(_cli(etcd, "web", "config", "set", SERVICE, str(path)))
    assert f"cannot put {config_key(SERVICE)}: permission denied for user web" in line


def test_an_operator_sets_config_and_registers_nothing(etcd: EtcdServer, tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text(json.dumps(DOCUMENT))
    stored = _ok(_cli(etcd, "ops", "config", "set", SERVICE, str(path)))
    assert stored.startswith("stored sec.srv.app's config")
    assert json.loads(_ok(_cli(etcd, "ops", "config", "show", SERVICE))) == DOCUMENT
    line = _one_line_error(_cli(etcd, "ops", "config", "set", OTHER, str(path)))
    assert f"cannot read {config_key(OTHER)}: permission denied for user ops" in line
    with _registry(etcd, "ops") as registry, pytest.raises(AuthError, match=r"^cannot put /sec/"):
        registry.register(SERVICE, address="127.0.0.1:5004")
    with _client(etcd, "ops") as ops:
        key = clients_prefix(SERVICE) + "x"
        with pytest.raises(AuthError, match=_refused("ops", "put", key)):
            ops.put(key, "{}")


def test_roles_follow_the_registry_root(etcd: EtcdServer) -> None:
    granted = _ok(_cli(etcd, "root", "acl", "grant", SERVICE, "--server", "srv", root="/prod"))
    assert "grpc-etcd/prod/sec.srv.app/server (set): readwrite /prod/sec/srv/app/*" in granted
    with grpc_etcd.Registry(
        etcd.endpoint, username="srv", password=PASSWORD, root="/prod"
    ) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5005")
        assert reg.key.startswith("/prod/sec/srv/app/")
        reg.close()


def test_roles_on_an_etcd_without_auth_come_with_a_note(etcd_factory: Factory) -> None:
    plain = etcd_factory()
    plain.etcdctl("user", "add", f"srv:{PASSWORD}")
    result = CliRunner().invoke(
        main, ["--etcd", plain.endpoint, "acl", "grant", SERVICE, "--server", "srv"]
    )
    assert result.exit_code == 0, result.output
    assert f"granted {role_name(SERVICE, 'server')} to srv" in result.stdout
    assert result.stderr.startswith("note: auth is not enabled on this etcd")


def test_a_refused_watch_is_one_line_not_a_retry_loop(etcd: EtcdServer) -> None:
    line = _one_line_error(_cli(etcd, "web", "watch", OTHER))
    assert "cannot read the keys under /sec/srv/other/: permission denied for user web" in line
    listed = _one_line_error(_cli(etcd, "web", "ls", OTHER))
    assert "cannot read the keys under /sec/srv/other/: permission denied for user web" in listed


def test_config_check_fails_when_etcd_refuses_the_read(etcd: EtcdServer, tmp_path: Path) -> None:
    """etcd answered, and refused (no or wrong credentials): that is no 'etcd not reached', so
    the pipeline's check fails instead of passing a typo on the schema alone."""
    typo = tmp_path / "typo.json"
    typo.write_text('{"routes": [{"to": [{"subset": {"verison": "v1"}}]}]}')
    for credentials in ([], ["--user", "web", "--password", "wrong"]):
        args = ["--etcd", etcd.endpoint, *credentials, "config", "check", str(typo)]
        line = _one_line_error(CliRunner().invoke(main, [*args, "--service", SERVICE]))
        assert "no user name and password" in line or "authentication failed" in line, line
