"""Fixtures of the xDS tests (module-scoped: one control plane, one client process per kind)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from xds_harness import CLIENT_KINDS, Client, PlaneProcess, Servers, client_command, npm_prefix

import grpc_etcd
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    made = Servers()
    yield made
    made.close()


@pytest.fixture(scope="module")
def registry(etcd_session: EtcdServer) -> Iterator[grpc_etcd.Registry]:
    with grpc_etcd.Registry(etcd_session.endpoint) as reg:
        yield reg


@pytest.fixture(scope="module")
def kv(etcd_session: EtcdServer) -> Iterator[EtcdClient]:
    with EtcdClient(etcd_session.endpoint) as made:
        yield made


@pytest.fixture(scope="module")
def plane(
    etcd_session: EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlaneProcess]:
    process = PlaneProcess(etcd_session.endpoint, tmp_path_factory.mktemp("xds") / "plane.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module", params=CLIENT_KINDS)
def client(
    request: pytest.FixtureRequest,
    plane: PlaneProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Client]:
    """An unmodified client of each kind, bootstrapped to the module's control plane."""
    kind: str = request.param
    command, env = client_command(kind, plane.address, npm_prefix(request.config, tmp_path_factory))
    made = Client(kind, command, env, tmp_path_factory.mktemp("client") / f"{kind}.log")
    yield made
    made.close()


@pytest.fixture
def service(request: pytest.FixtureRequest, client: Client) -> str:
    """A service name of this test and client kind (the tests share one etcd)."""
    name = request.node.originalname.removeprefix("test_").replace("_", "-")
    return f"xds.{name}.{client.kind}"
