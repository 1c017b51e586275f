"""The control plane as the least-privileged etcd user ``acl grant SERVICE --xds USER`` makes
(real etcd with auth): it serves an unmodified grpcio client, and cannot write anything."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from xds_harness import Ads, Client, PlaneProcess, Servers, client_command

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.cli import main
from grpc_etcd.clients import clients_prefix
from grpc_etcd.config import config_key
from grpc_etcd.registry.acl import role_name
from grpc_etcd.registry.etcd import AsyncEtcdClient, AuthError, EtcdClient
from grpc_etcd.testing import EtcdServer
from grpc_etcd.xds import ControlPlane
from grpc_etcd.xds.translate import LDS

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


def _grant(etcd: EtcdServer, service: str) -> None:
    base = ["--etcd", etcd.endpoint, "--user", "root", "--password", PASSWORD, "acl", "grant"]
    result = CliRunner().invoke(main, [*base, service, "--xds", "plane"])
    assert result.exit_code == 0, result.output


async def test_a_service_its_user_may_not_read_does_not_exist_until_granted(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Without --services the plane watches what a client names; one its etcd user may not
    read is answered as a resource that does not exist (not left pending: the client would
    wait out its resource timeout), the refusal is logged once, and the service is served
    once the user may read it (the watch keeps retrying)."""
    caplog.set_level(logging.INFO, logger="grpc_etcd.xds")
    async with (
        AsyncEtcdClient(etcd.endpoint, username="plane", password=PASSWORD) as client,
        ControlPlane(client) as plane,
    ):
        ads = Ads(plane.address)
        try:
            await ads.ask(LDS, OTHER)
            response = await ads.read()
            assert response.type_url == LDS and list(response.resources) == []
            ((error),) = response.resource_errors  # xRFC TP3: why, to clients that read it
            assert error.resource_name.name == OTHER
            assert (error.error_detail.code, error.error_detail.message) == (
                grpc.StatusCode.NOT_FOUND.value[0],
                f"etcd refuses {OTHER} to the control plane (see its log)",
            )
            await ads.ack(response, OTHER)
            await ads.nothing()  # the refused retries go on, and send nothing more
            async with grpc_etcd.aio.Registry(
                etcd.endpoint, username="root", password=PASSWORD
            ) as root:
                await root.register(OTHER, address="127.0.0.1:9001", version="v1")
                _grant(etcd, OTHER)
                response = await ads.read(20)
            assert response.type_url == LDS and len(response.resources) == 1
            assert not response.resource_errors
        finally:
            await ads.close()
    refused = [r.getMessage() for r in caplog.records if "not serving" in r.getMessage()]
    assert len(refused) == 1, refused
    assert refused[0].startswith(f"not serving {OTHER}: cannot watch ")
    assert "permission denied for user plane" in refused[0]
    assert f"serving {OTHER}: the control plane may read it now" in caplog.text


def test_a_grpcio_client_fails_fast_on_a_refused_service_and_recovers(
    etcd: EtcdServer, servers: Servers, tmp_path: Path
) -> None:
    plane = PlaneProcess(
        etcd.endpoint,
        tmp_path / "plane.log",
        etcd_options=("--user", "plane", "--password", PASSWORD),
    )
    plane.start()
    command, env = client_command("grpcio", plane.address, tmp_path)
    # grpcio reads the errors of xRFC TP3 (gRFC A88) behind this flag (1.85); without it, a
    # resource not sent fails its calls only after its does-not-exist timer (15 s).
    env["GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING"] = "true"
    client = Client("grpcio", command, env, tmp_path / "client.log")
    try:
        # Left pending, each call would wait out its deadline (2 s) while the client waits
        # for the resource; told it is not served and why, they fail at once, saying so.
        result = client.calls(OTHER, 3, timeout=2.0)
        assert not result["answers"]
        ((error, count),) = result["errors"].items()
        assert count == 3 and error.startswith("UNAVAILABLE: "), error
        assert f"etcd refuses {OTHER} to the control plane" in error, error
        with grpc_etcd.Registry(etcd.endpoint, username="root", password=PASSWORD) as registry:
            registry.register(OTHER, address=servers.start("o1"), version="v1")
            _grant(etcd, OTHER)
            client.until(OTHER, lambda r: r["answers"] == {"o1": 5}, within=20, what="o1")
    finally:
        client.close()
        plane.stop()
    assert (tmp_path / "plane.log").read_text().count(f"not serving {OTHER}") == 1
