"""The control plane over TLS and mutual TLS: unmodified clients with gRFC A65's bootstrap
credentials get their routes; a client without TLS, or without a certificate when one is
required, gets nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from xds_harness import Client, PlaneProcess, Servers, client_command, npm_prefix

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.cli import main as cli
from grpc_etcd.registry.etcd import TLSConfig
from grpc_etcd.testing import EtcdServer, TLSFiles, TLSUnavailableError, make_certs
from grpc_etcd.xds import ControlPlane, bootstrap_config
from grpc_etcd.xds._plane import check_tls
from grpc_etcd.xds._protos import AdsStub, DiscoveryRequest
from grpc_etcd.xds.translate import LDS

SERVICE = "tls.srv.app"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    try:
        return make_certs(tmp_path_factory.mktemp("xds-tls") / "certs")
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS here: {exc}")


def _server_tls(certs: TLSFiles, *, mutual: bool) -> TLSConfig:
    return TLSConfig(
        cert_file=str(certs.server_cert),
        key_file=str(certs.server_key),
        ca_file=str(certs.ca) if mutual else None,
    )


def _client_credentials(certs: TLSFiles, *, with_cert: bool) -> grpc.ChannelCredentials:
    if not with_cert:
        return grpc.ssl_channel_credentials(certs.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )


async def _listener(channel: grpc.aio.Channel) -> Any:
    """The first LDS answer on one ADS stream of ``channel`` (raises if none comes)."""
    call: Any = AdsStub(channel).StreamAggregatedResources(timeout=5)
    request = DiscoveryRequest(type_url=LDS, resource_names=[SERVICE])
    request.node.id = "tls-test"
    await call.write(request)
    response = await call.read()
    call.cancel()
    return response


@pytest.fixture
async def registered(etcd_session: EtcdServer) -> AsyncIterator[grpc_etcd.aio.Registry]:
    async with grpc_etcd.aio.Registry(etcd_session.endpoint) as registry:
        reg = await registry.register(SERVICE, address="127.0.0.1:5999", version="v1")
        yield registry
        await reg.close()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
async def test_the_python_api_serves_tls(
    registered: grpc_etcd.aio.Registry, certs: TLSFiles, mutual: bool
) -> None:
    plane = ControlPlane(registered, tls=_server_tls(certs, mutual=mutual))
    async with plane:
        assert plane.security == ("mutual TLS" if mutual else "TLS")
        good = _client_credentials(certs, with_cert=mutual)
        async with grpc.aio.secure_channel(plane.address, good) as channel:
            response = await _listener(channel)
        assert response.type_url == LDS and len(response.resources) == 1
        refused = [grpc.aio.insecure_channel(plane.address)]  # no TLS at all
        if mutual:  # TLS, but no client certificate
            no_cert = _client_credentials(certs, with_cert=False)
            refused.append(grpc.aio.secure_channel(plane.address, no_cert))
        for channel in refused:
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _listener(channel)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_rotated_certificate_serves_new_connections_without_a_restart(
    registered: grpc_etcd.aio.Registry, certs: TLSFiles, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "plane.crt", live / "plane.key"
    shutil.copy(certs.server_cert, cert)
    shutil.copy(certs.server_key, key)
    renewed = make_certs(tmp_path / "renewed")  # another CA: only its clients trust the new one
    tls = TLSConfig(cert_file=str(cert), key_file=str(key))
    async with ControlPlane(registered, tls=tls) as plane:

        async def served(ca: bytes) -> bool:
            credentials = grpc.ssl_channel_credentials(ca)
            async with grpc.aio.secure_channel(plane.address, credentials) as channel:
                try:
                    await _listener(channel)
                except grpc.aio.AioRpcError:
                    return False
                return True

        old_ca, new_ca = certs.ca.read_bytes(), renewed.ca.read_bytes()
        assert await served(old_ca) and not await served(new_ca)
        shutil.copy(renewed.server_key, key)
        shutil.copy(renewed.server_cert, cert)
        assert await served(new_ca) and not await served(old_ca)


def test_bad_tls_arguments_are_refused(certs: TLSFiles) -> None:
    with pytest.raises(ValueError, match="needs a certificate and its key"):
        check_tls(TLSConfig(ca_file=str(certs.ca)))
    with pytest.raises(ValueError, match="server_name is for clients"):
        check_tls(TLSConfig(cert_file="c", key_file="k", server_name="x"))


@pytest.mark.parametrize(
    ("args", "fault"),
    [
        (["xds", "--cert", "plane.crt"], "needs a certificate and its key"),
        (["xds", "--cacert", "ca.crt"], "needs a certificate and its key"),
        (["xds", "--cert", "/nonexistent.crt", "--key", "/nonexistent.key"], "cannot read"),
        (["xds", "bootstrap", "--server", "h:1", "--cert", "c", "--key", "k"], "give --cacert"),
        (["xds", "bootstrap", "--server", "h:1", "--cacert", "a", "--cert", "c"], "go together"),
    ],
)
def test_cli_tls_errors_are_one_line(args: list[str], fault: str) -> None:
    result = CliRunner().invoke(cli, ["--etcd", "127.0.0.1:1", *args])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and fault in line, line


@pytest.mark.parametrize(
    ("cert", "key", "ca", "fault"),
    [
        ("server_cert", "client_key", None, "is not the private key of"),
        ("server_key", "server_cert", None, "a PEM certificate and its private key"),
        ("server_cert", "server_key", "server_key", "holds no PEM certificate"),
    ],
    ids=["other-key", "swapped", "bad-ca"],
)
def test_files_that_cannot_serve_tls_are_refused_in_one_line(
    certs: TLSFiles, cert: str, key: str, ca: str | None, fault: str
) -> None:
    """A key of another certificate, or the files swapped, was 'cannot listen on ... (address
    in use?)' after grpc's own log lines: refused before anything listens, naming the files."""
    args = ["xds", "--listen", "127.0.0.1:0"]
    args += ["--cert", str(getattr(certs, cert)), "--key", str(getattr(certs, key))]
    args += ["--cacert", str(getattr(certs, ca))] if ca else []
    result = CliRunner().invoke(cli, ["--etcd", "127.0.0.1:1", *args])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the control plane's ") and fault in line, line
    assert "address in use" not in line


def test_the_bootstrap_carries_a65_tls_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["xds", "bootstrap", "--server", "10.0.0.5:18000", "--cacert", "ca.crt",
         "--cert", "/etc/c.crt", "--key", "/etc/c.key"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (server,) = json.loads(result.stdout)["xds_servers"]
    assert server["server_uri"] == "10.0.0.5:18000"
    assert server["channel_creds"] == [
        {
            "type": "tls",
            "config": {
                "ca_certificate_file": str(Path.cwd() / "ca.crt"),  # made absolute
                "certificate_file": "/etc/c.crt",
                "private_key_file": "/etc/c.key",
            },
        }
    ]
    tls_only = bootstrap_config("h:1", cacert="/ca.crt")["xds_servers"][0]["channel_creds"]
    assert tls_only == [{"type": "tls", "config": {"ca_certificate_file": "/ca.crt"}}]
    plain = bootstrap_config("h:1")["xds_servers"][0]["channel_creds"]
    assert plain == [{"type": "insecure"}]


def test_the_bootstrap_warns_of_a_tls_file_missing_here(certs: TLSFiles, tmp_path: Path) -> None:
    """A typo'd --cacert made a bootstrap whose client reached no control plane, with no word
    (the files may be another machine's: a warning, and the bootstrap is still written)."""
    missing = tmp_path / "ca.crl"
    args = ["xds", "bootstrap", "--server", "h:1", "--cacert", str(missing)]
    result = CliRunner().invoke(cli, [*args, "--cert", str(certs.client_cert), "--key", "c.key"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    assert result.stderr.splitlines() == [
        f"warning: --cacert {missing}: no such file here; the client reads {missing} where it "
        "runs, and without it reaches no control plane",
        f"warning: --key c.key: no such file here; the client reads {Path.cwd() / 'c.key'} "
        "where it runs, and without it reaches no control plane",
    ]
    found = CliRunner().invoke(
        cli, ["xds", "bootstrap", "--server", "h:1", "--cacert", str(certs.ca)]
    )
    assert found.exit_code == 0 and found.stderr == "", found.output


# ---------------------------------------------------------------- unmodified clients


@pytest.fixture(scope="module")
def tls_servers() -> Iterator[Servers]:
    made = Servers()
    yield made
    made.close()


@pytest.fixture(scope="module")
def mtls_plane(
    etcd_session: EtcdServer, certs: TLSFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlaneProcess]:
    tls = ("--cert", str(certs.server_cert), "--key", str(certs.server_key))
    options = (*tls, "--cacert", str(certs.ca))
    log = tmp_path_factory.mktemp("xds-tls") / "plane.log"
    process = PlaneProcess(etcd_session.endpoint, log, options)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def registry(etcd_session: EtcdServer) -> Iterator[grpc_etcd.Registry]:
    with grpc_etcd.Registry(etcd_session.endpoint) as made:
        yield made


def _client(
    request: pytest.FixtureRequest,
    kind: str,
    plane: PlaneProcess,
    tmp_path_factory: pytest.TempPathFactory,
    **tls: str,
) -> Client:
    npm = npm_prefix(request.config, tmp_path_factory)
    command, env = client_command(kind, plane.address, npm, **tls)
    return Client(kind, command, env, tmp_path_factory.mktemp("client") / f"{kind}.log")


def test_a_grpcio_client_with_a65_credentials_is_served_over_mutual_tls(
    request: pytest.FixtureRequest,
    mtls_plane: PlaneProcess,
    registry: grpc_etcd.Registry,
    tls_servers: Servers,
    certs: TLSFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    service = "tls.mutual.grpcio"
    tls = {"cacert": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}
    with registry.register(service, address=tls_servers.start("m1"), version="v1"):
        client = _client(request, "grpcio", mtls_plane, tmp_path_factory, **tls)
        try:
            client.until(service, lambda r: r["answers"] == {"m1": 5}, within=15, what="m1")
        finally:
            client.close()


@pytest.mark.parametrize("kind", ["grpcio", "grpc-js"])
@pytest.mark.parametrize("credentials", ["plain text", "TLS without a certificate"])
def test_a_client_without_what_the_plane_requires_gets_nothing(
    request: pytest.FixtureRequest,
    mtls_plane: PlaneProcess,
    registry: grpc_etcd.Registry,
    tls_servers: Servers,
    certs: TLSFiles,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    credentials: str,
) -> None:
    # grpc-js-xds 1.14 has no gRFC A65 tls credentials: it refuses such a bootstrap, so it
    # gets nothing that way too
    service = f"tls.refused.{kind.replace('-', '')}.{len(credentials)}"
    tls = {"cacert": str(certs.ca)} if credentials != "plain text" else {}
    with registry.register(service, address=tls_servers.start("r1"), version="v1"):
        client = _client(request, kind, mtls_plane, tmp_path_factory, **tls)
        try:
            result = client.calls(service, 2, timeout=2.0)
        finally:
            client.close()
    assert result["answers"] == {}, result  # no listener, cluster or endpoint reached it
    assert sum(result["errors"].values()) == 2
    # grpcio fails the call (the xDS channel is in failure); grpc-js waits for a resolution
    # that never comes, until the deadline
    unresolved = ("UNAVAILABLE", "DEADLINE_EXCEEDED: Deadline exceeded after")
    assert all(error.startswith(unresolved) for error in result["errors"]), result
