"""A canary release driven by grpc-etcd route set reaches a running channel (real etcd, servers)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner

import grpc_etcd
from grpc_etcd.cli import main
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.demo.server import Api
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.canary"
#: The issue's goal for a config write to reach a running channel.
REACH_WITHIN = 2.0


@pytest.fixture
def servers(etcd: EtcdServer) -> Iterator[grpc_etcd.Registry]:
    """One v1 and one v2 demo server, registered; the registry they are registered in."""
    started: list[grpc.Server] = []
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        for version in ("v1", "v2"):
            server = grpc.server(futures.ThreadPoolExecutor(4))
            port = server.add_insecure_port("127.0.0.1:0")
            api_pb2_grpc.add_ApiServicer_to_server(Api(version, f"127.0.0.1:{port}"), server)  # type: ignore[no-untyped-call]
            server.start()
            started.append(server)
            registry.register(SERVICE, address=f"127.0.0.1:{port}", version=version)
        try:
            yield registry
        finally:
            for server in started:
                server.stop(None)


def _route_set(etcd: EtcdServer, *args: str) -> float:
    """Run grpc-etcd route set; the monotonic time it returned at."""
    result = CliRunner().invoke(main, ["--etcd", etcd.endpoint, "route", "set", SERVICE, *args])
    assert result.exit_code == 0, result.output
    return time.monotonic()


def _answered_by(stub: api_pb2_grpc.ApiStub) -> str:
    reply = stub.ApiTest(api_pb2.Request(input="x"), timeout=5)
    return str(reply.output).split("@")[0]


def _seconds_until_only(stub: api_pb2_grpc.ApiStub, version: str, since: float) -> float:
    """Seconds from ``since`` until 20 calls in a row reach ``version`` (bounded)."""
    in_a_row, reached = 0, 0.0
    deadline = since + 10
    while in_a_row < 20:
        assert time.monotonic() < deadline, f"calls did not all reach {version} within 10 s"
        if _answered_by(stub) == version:
            reached = reached or time.monotonic()
            in_a_row += 1
        else:
            in_a_row, reached = 0, 0.0
    return reached - since


def test_canary_from_0_to_100_percent_and_back(
    etcd: EtcdServer, servers: grpc_etcd.Registry
) -> None:
    with servers.channel(SERVICE) as channel:
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        assert {_answered_by(stub) for _ in range(40)} == {"v1", "v2"}  # no route: both

        written = _route_set(etcd, "--split", "v1=100,v2=0", "--fallback", "version=v1,any")
        assert _seconds_until_only(stub, "v1", written) < REACH_WITHIN  # 0%

        _route_set(etcd, "--split", "v1=90,v2=10")
        _wait_for_a_v2_answer(stub)
        # 10% over 2,000 calls: sd 0.67 points; the +-3 point bound is 4.5 sd (p < 1e-5).
        shares = Counter(_answered_by(stub) for _ in range(2000))
        assert abs(shares["v2"] / 2000 - 0.10) < 0.03, shares

        written = _route_set(etcd, "--split", "v1=0,v2=100")
        assert _seconds_until_only(stub, "v2", written) < REACH_WITHIN  # 100%
        with grpc_etcd.route(version="v1"):  # a pinned call is not split
            assert _answered_by(stub) == "v1"

        written = _route_set(etcd, "--split", "v1=100,v2=0")
        assert _seconds_until_only(stub, "v1", written) < REACH_WITHIN  # and back


def _wait_for_a_v2_answer(stub: api_pb2_grpc.ApiStub) -> None:
    """Wait (bounded) until a v2 answer shows that the 90/10 split is in force."""
    deadline = time.monotonic() + 10
    while _answered_by(stub) != "v2":
        assert time.monotonic() < deadline, "no call reached v2 within 10 s of the 90/10 split"
