"""What stops a record that points a service's calls elsewhere (docs/security.md): TLS to the
nodes, each checked against the service's one name, and the allow-list."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import grpc_etcd
from grpc_etcd.testing import EtcdServer, TLSFiles, TLSUnavailableError, make_certs

SERVICE = "sec.srv.tls"
NAME = "app.internal"  # the one name every real server's certificate carries
WHO = "who"  # a health "service" name each server answers differently


@contextlib.contextmanager
def _server(certs: TLSFiles | None, status: int) -> Iterator[str]:
    servicer = health.HealthServicer()
    servicer.set(WHO, status)
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if certs is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        key_pair = (certs.server_key.read_bytes(), certs.server_cert.read_bytes())
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([key_pair]))
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _certs(directory: Path) -> TLSFiles:
    try:
        return make_certs(directory, hosts=[NAME])
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS here: {exc}")


def test_a_node_without_the_services_certificate_gets_no_calls(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    ours = _certs(tmp_path / "ours")
    theirs = _certs(tmp_path / "theirs")  # another CA: a certificate for NAME all the same
    serving = health_pb2.HealthCheckResponse.SERVING
    rogue = health_pb2.HealthCheckResponse.NOT_SERVING
    with (
        _server(ours, serving) as real,
        _server(theirs, rogue) as other_ca,
        _server(None, rogue) as plain,
        grpc_etcd.Registry(etcd.endpoint) as registry,
    ):
        for address in (real, other_ca, plain):  # anyone who may write the prefix
            registry.register(SERVICE, address=address)
        channel = registry.channel(
            SERVICE,
            policy="round_robin",
            credentials=grpc.ssl_channel_credentials(ours.ca.read_bytes()),
            options=[("grpc.ssl_target_name_override", NAME)],
        )
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            answers = [
                stub.Check(
                    health_pb2.HealthCheckRequest(service=WHO), timeout=5, wait_for_ready=True
                ).status
                for _ in range(30)
            ]
        finally:
            channel.close()
    assert set(answers) == {serving}  # every call reached the real server only
