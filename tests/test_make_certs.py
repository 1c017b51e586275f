"""grpc_etcd.testing.make_certs: the files it writes serve TLS and mutual TLS with grpcio."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_etcd.testing import TLSFiles, TLSUnavailableError, make_certs


def _certs(directory: Path, **kwargs: object) -> TLSFiles:
    try:
        return make_certs(directory, **kwargs)  # type: ignore[arg-type]
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS here: {exc}")


@pytest.fixture
def certs(tmp_path: Path) -> TLSFiles:
    return _certs(tmp_path / "tls")


@contextlib.contextmanager
def _server(files: TLSFiles, *, mutual: bool) -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(files.server_key.read_bytes(), files.server_cert.read_bytes())],
        root_certificates=files.ca.read_bytes() if mutual else None,
        require_client_auth=mutual,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def _check(port: int, credentials: grpc.ChannelCredentials, **options: str) -> bool:
    channel_options = [(f"grpc.{k}", v) for k, v in options.items()]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, channel_options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE
            return False
        return True


def test_it_writes_the_five_files_with_private_keys(certs: TLSFiles, tmp_path: Path) -> None:
    names = [certs.ca, certs.server_cert, certs.server_key, certs.client_cert, certs.client_key]
    assert [p.name for p in names] == [
        "ca.crt",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ]
    assert all(p.parent == tmp_path / "tls" for p in names)
    assert all(p.read_bytes().startswith(b"-----BEGIN") for p in names)
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE(certs.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.client_key.stat().st_mode) == 0o600


def test_tls_with_the_ca(certs: TLSFiles) -> None:
    with _server(certs, mutual=False) as port:
        assert _check(port, grpc.ssl_channel_credentials(certs.ca.read_bytes()))
        assert not _check(port, grpc.ssl_channel_credentials())  # the system's roots: untrusted


def test_mutual_tls_needs_the_client_certificate(certs: TLSFiles) -> None:
    with_cert = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    with _server(certs, mutual=True) as port:
        assert _check(port, with_cert)
        assert not _check(port, grpc.ssl_channel_credentials(certs.ca.read_bytes()))


def test_other_host_names(tmp_path: Path) -> None:
    files = _certs(tmp_path / "named", hosts=["svc.test"])
    credentials = grpc.ssl_channel_credentials(files.ca.read_bytes())
    with _server(files, mutual=False) as port:
        assert _check(port, credentials, ssl_target_name_override="svc.test")
        assert not _check(port, credentials)  # 127.0.0.1 is not among its names
    with pytest.raises(ValueError, match="at least one host"):
        make_certs(tmp_path / "none", hosts=[])


@pytest.mark.parametrize("host", ["bad host", "", "-lead.test", "a..b", "x_y.test", "h\n"])
def test_a_host_that_is_no_name_is_refused(tmp_path: Path, host: str) -> None:
    """The openssl fallback wrote any string into the certificate's names, unchecked."""
    with pytest.raises(ValueError, match="is neither an IP address nor a DNS name"):
        make_certs(tmp_path / "bad", hosts=["localhost", host])
    assert not (tmp_path / "bad").exists()


def test_a_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make_certs("tls")`` from the current directory, as a user's own test would call it
    (the openssl fallback ran openssl inside the directory with paths relative to outside)."""
    if shutil.which("openssl") is None and importlib.util.find_spec("cryptography") is None:
        pytest.skip("no TLS here: neither openssl nor cryptography")  # pragma: no cover
    monkeypatch.chdir(tmp_path)
    files = make_certs("tls")  # not _certs(): a failure here is no missing tool
    assert files.ca == Path("tls/ca.crt")
    with _server(files, mutual=False) as port:
        assert _check(port, grpc.ssl_channel_credentials(files.ca.read_bytes()))
