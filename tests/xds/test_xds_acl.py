"""The control plane as the least-privileged etcd user ``acl grant SERVICE --xds USER`` makes
(real etcd with auth): it serves an unmodified grpcio client, and cannot write anything."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from xds_harness import Client, PlaneProcess, Servers, client_command

import grpc_etcd
from grpc_etcd.cli import main
from grpc_etcd.clients import clients_prefix
from grpc_etcd.config import config_key
from grpc_etcd.registry.acl import role_name
from grpc_etcd.registry.etcd import AuthError, EtcdClient
from grpc_etcd.testing import EtcdServer

SERVICE = "acl.srv.app"
OTHER = "acl.srv.other"
PASSWORD = "pw"
ROUND_ROBIN = {"loadBalancingConfig": [{"round_robin": {}}]}


@pytest.fixture
def etcd(etcd_factory: Callable[..., EtcdServer]) -> EtcdServer:
    """An etcd with auth on: user srv registers SERVICE, user plane serves it over xDS."""
    server = etcd_factory(auth=("root", PASSWORD))
    for user in ("srv", "plane"):
        server.etcdctl("user", "add", f"{user}:{PASSWORD}")
    base = ["--etcd", server.endpoint, "--user", "root", "--password", PASSWORD, "acl", "grant"]
    result = CliRunner().invoke(main, [*base, SERVICE, "--server", "srv", "--xds", "plane"])
    assert result.exit_code == 0, result.output
    assert f"granted {role_name(SERVICE, 'xds')} to plane" in result.stdout
    return server


@pytest.fixture
def servers() -> Iterator[Servers]:
    made = Servers()
    yield made
    made.close()


def test_the_xds_role_reads_the_nodes_and_the_config_and_nothing_else(etcd: EtcdServer) -> None:
    base = ["--etcd", etcd.endpoint, "--user", "root", "--password", PASSWORD, "acl", "show"]
    report = json.loads(CliRunner().invoke(main, [*base, SERVICE, "--json"]).stdout)
    assert report["xds"] == {
        "role": "grpc-etcd/acl.srv.app/xds",
        "exists": True,
        "permissions": ["read /acl/srv/app/*", "read /grpc-etcd/config/acl.srv.app"],
        "as_granted": True,
        "users": ["plane"],
    }


def test_a_control_plane_as_that_user_serves_a_client_and_cannot_write(
    etcd: EtcdServer, servers: Servers, tmp_path: Path
) -> None:
    plane = PlaneProcess(
        etcd.endpoint,
        tmp_path / "plane.log",
        ("--services", SERVICE),
        etcd_options=("--user", "plane", "--password", PASSWORD),
    )
    with grpc_etcd.Registry(etcd.endpoint, username="srv", password=PASSWORD) as registry:
        registry.register(SERVICE, address=servers.start("n1"), version="v1")
        with EtcdClient(etcd.endpoint, username="root", password=PASSWORD) as root:
            root.put(config_key(SERVICE), json.dumps(ROUND_ROBIN))  # read by the plane too
        plane.start()
        command, env = client_command("grpcio", plane.address, tmp_path)
        client = Client("grpcio", command, env, tmp_path / "client.log")
        try:
            client.until(SERVICE, lambda r: r["answers"] == {"n1": 5}, within=20, what="n1")
            registry.register(SERVICE, address=servers.start("n2"), version="v1")
            client.until(
                SERVICE, lambda r: set(r["answers"]) == {"n1", "n2"}, within=20, what="n1, n2"
            )
        finally:
            client.close()
            plane.stop()
        with EtcdClient(etcd.endpoint, username="plane", password=PASSWORD) as as_plane:
            assert as_plane.get_prefix("/acl/srv/app/")[0], "it reads the nodes"
            assert as_plane.get(config_key(SERVICE)) is not None, "and the config"
            for key in (
                "/acl/srv/app/made-up",
                config_key(SERVICE),
                clients_prefix(SERVICE) + "plane-1",
                "/acl/srv/other/x",
                config_key(OTHER),
            ):
                with pytest.raises(
                    AuthError, match=f"^cannot put {re.escape(key)}: permission denied"
                ) as info:
                    as_plane.put(key, "{}")
                assert (info.value.operation, info.value.user) == ("put", "plane")
                with pytest.raises(
                    AuthError, match=f"^cannot delete {re.escape(key)}: permission denied"
                ):
                    as_plane.delete(key)
            with pytest.raises(AuthError, match=r"^cannot read the keys under /acl/srv/other/"):
                as_plane.get_prefix("/acl/srv/other/")
            with pytest.raises(
                AuthError, match=f"^cannot read the keys under {re.escape(clients_prefix(SERVICE))}"
            ):
                as_plane.get_prefix(clients_prefix(SERVICE))
