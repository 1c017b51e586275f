"""``grpc_etcd.xds.ControlPlane`` in-process, spoken to over a raw ADS stream (real etcd)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest
from click.testing import CliRunner
from xds_harness import Ads

import grpc_etcd.aio
from grpc_etcd.cli import main as cli
from grpc_etcd.config import config_key
from grpc_etcd.testing import EtcdServer
from grpc_etcd.xds import ControlPlane
from grpc_etcd.xds.translate import CDS, EDS, LDS, RDS

SERVICE = "cp.srv.app"


@pytest.fixture
async def ads_of() -> AsyncIterator[Callable[[ControlPlane], Ads]]:
    made: list[Ads] = []

    def make(plane: ControlPlane) -> Ads:
        made.append(Ads(plane.address))
        return made[-1]

    yield make
    for ads in made:
        await ads.close()


async def test_nothing_is_served_before_etcd_was_read(
    etcd: EtcdServer, ads_of: Callable[[ControlPlane], Ads]
) -> None:
    etcd.stop()
    async with (
        grpc_etcd.aio.Registry(etcd.endpoint, timeout=1.0) as registry,
        ControlPlane(registry, services=[SERVICE]) as plane,
    ):
        ads = ads_of(plane)
        await ads.ask(LDS, SERVICE)
        await ads.nothing()  # an empty answer now would delete the service in the client
        etcd.start()
        response = await ads.read()
        assert response.type_url == LDS and len(response.resources) == 1


async def test_changes_are_pushed_type_by_type(
    etcd: EtcdServer, ads_of: Callable[[ControlPlane], Ads]
) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address="127.0.0.1:9001", version="v1")
        async with ControlPlane(registry) as plane:
            ads = ads_of(plane)
            v1, every = f"{SERVICE}|version=v1", f"{SERVICE}|*"
            subscriptions = {LDS: [SERVICE], RDS: [SERVICE], CDS: [v1, every], EDS: [v1, every]}
            for type_url, names in subscriptions.items():
                await ads.ask(type_url, *names)
                response = await ads.read()
                assert response.type_url == type_url
                await ads.ack(response, *names)
            await ads.nothing()
            # A second node of v1: only the endpoints of the two clusters that hold it.
            await registry.register(SERVICE, address="127.0.0.1:9002", version="v1")
            response = await ads.read()
            assert response.type_url == EDS and len(response.resources) == 2
            await ads.ack(response, v1, every)
            # A config in etcd (round_robin -> ring_hash): the clusters and the routes.
            await registry.client.put(
                config_key(SERVICE),
                json.dumps({"loadBalancingConfig": [{"ring_hash": {"requestHashHeader": "k"}}]}),
            )
            got = {(await ads.read()).type_url for _ in range(2)}
            assert got == {RDS, CDS}
            # A bad config is refused with a warning; nothing changes for clients.
            await registry.client.put(config_key(SERVICE), b"{not json")
            await ads.nothing()
            translation = plane.translation(SERVICE)
            assert translation is not None and translation.policy == "ring_hash"


async def test_only_the_named_services_are_served(
    etcd: EtcdServer, ads_of: Callable[[ControlPlane], Ads]
) -> None:
    async with (
        grpc_etcd.aio.Registry(etcd.endpoint) as registry,
        ControlPlane(registry, services=[SERVICE]) as plane,
    ):
        await plane.wait_synced(10)
        ads = ads_of(plane)
        await ads.ask(LDS, "other.srv.app")
        response = await ads.read()
        assert list(response.resources) == []  # "does not exist", at once


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        ControlPlane(grpc_etcd.aio.Registry("127.0.0.1:2379"), listen="nowhere")
    with pytest.raises(ValueError, match="service name"):
        ControlPlane(grpc_etcd.aio.Registry("127.0.0.1:2379"), services=["bad name"])


@pytest.mark.parametrize(
    ("args", "fault"),
    [
        (["xds", "--listen", "nowhere"], "host:port"),
        (["xds", "--services", "a/b"], "must be dotted"),
        (["xds", "--allow", "10.0.0.0/33"], "10.0.0.0/33"),
        (["xds", "bootstrap", "--server", "x"], "host:port"),
        (["xds", "bootstrap", "--server", "127.0.0.1:1", "--source", "v2"], "key=value"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], fault: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert fault in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_bootstrap_carries_source_labels_and_locality() -> None:
    args = ["xds", "bootstrap", "--server", "127.0.0.1:18000", "--source", "version=v2,zone=a"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    (server,) = document["xds_servers"]
    assert server["server_uri"] == "127.0.0.1:18000"
    assert "ignore_resource_deletion" in server["server_features"]
    assert document["node"]["locality"] == {"zone": ""}
    assert document["node"]["metadata"]["grpc-etcd.source"] == {"version": "v2", "zone": "a"}


async def test_nodes_outside_the_allowed_networks_are_left_out(etcd: EtcdServer) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address="127.0.0.1:9001", version="v1")
        await registry.register(SERVICE, address="127.0.0.2:9001", version="v2")
        async with ControlPlane(registry, services=[SERVICE], allow=["127.0.0.2/32"]) as plane:
            await plane.wait_synced(10)
            translation = plane.translation(SERVICE)
            assert translation is not None
            assert [node.address for node in translation.state.nodes] == ["127.0.0.2:9001"]


async def test_a_port_in_use_is_refused_in_one_line(etcd: EtcdServer) -> None:
    async with (
        grpc_etcd.aio.Registry(etcd.endpoint) as registry,
        ControlPlane(registry) as first,
    ):
        second = ControlPlane(registry, listen=first.address)
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(address in use"):
            await second.start()


def test_the_cli_refuses_a_port_in_use_in_one_line(etcd_session: EtcdServer) -> None:
    """Only our line: grpc's own refusal to bind logs a line of its core to stderr first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        command = [sys.executable, "-m", "grpc_etcd.cli", "--etcd", etcd_session.endpoint]
        result = subprocess.run(
            [*command, "xds", "--listen", address], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"Error: cannot listen on {address} (address in use)"]


async def test_an_address_not_on_this_host_is_refused_as_such(etcd: EtcdServer) -> None:
    """Not "address in use?", as grpc's refusal to bind made us guess."""
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        plane = ControlPlane(registry, listen="192.0.2.1:18000")  # TEST-NET-1: no host's
        with pytest.raises(OSError, match=r"^cannot listen on 192\.0\.2\.1:18000 \(cannot assign"):
            await plane.start()


async def test_clients_cannot_make_it_watch_endless_services(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import grpc_etcd.xds._plane as plane_module

    monkeypatch.setattr(plane_module, "MAX_SERVICES", 3)
    async with (
        grpc_etcd.aio.Registry(etcd.endpoint) as registry,
        ControlPlane(registry) as plane,  # every service a client names
    ):
        answers = [plane.lookup(LDS, f"made.up.s{i}", {}) for i in range(6)]
        assert answers[3:] == [None, None, None] and None not in answers[:3]
        assert len(plane._watched) == 3
    warned = [r.getMessage() for r in caplog.records if "not watching" in r.getMessage()]
    assert len(warned) == 1 and "3 services are watched already" in warned[0]
