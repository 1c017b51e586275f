"""Calls that get no node, in both twins (issue 13): a split to a version without nodes fails
its share of calls and no more, etcd's silence is named in a deadline's details, and no
internal exception is chained to what the caller catches."""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import pytest
from echo_servers import SERVICE, EchoServer, Request, snapshot

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo.api_pb2_grpc import ApiStub

SPLIT = {
    "routes": [
        {
            "to": [
                {"subset": {"version": "v1"}, "weight": 50},
                {"subset": {"version": "v9"}, "weight": 50},
            ]
        }
    ]
}
CALLS = 400
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: etcd never answers


@pytest.fixture
def server() -> Iterator[EchoServer]:
    made = EchoServer("a").start()
    yield made
    made.stop()


def _share(failed: int) -> None:
    """``v1=50,v9=50`` with no v9 node: 50% of calls fail (25% did: a refused pick was drawn
    again). Seeded, 400 calls: 50% +- 10% (the binomial's sigma is 2.5%: 4 sigma)."""
    assert abs(failed / CALLS - 0.5) < 0.1, failed


def _refused(error: BaseException, code: grpc.StatusCode) -> None:
    assert isinstance(error, grpc.RpcError) and error.code() == code  # type: ignore[attr-defined]
    assert error.__context__ is None and error.__cause__ is None


def test_sync_a_split_to_a_version_without_nodes_fails_its_share(server: EchoServer) -> None:
    random.seed(13)
    with grpc_etcd.BalancedChannel(SERVICE, config=SPLIT) as channel:
        channel.update(snapshot((server, "v1")))
        stub = ApiStub(channel)
        stub.ApiTest(Request(input="x"), timeout=10, metadata=[("x-version", "v1")])
        failed = 0
        for i in range(CALLS):
            try:
                stub.ApiTest(Request(input=str(i)), timeout=10)
            except grpc.RpcError as exc:
                _refused(exc, grpc.StatusCode.UNAVAILABLE)
                failed += 1
    _share(failed)


async def test_aio_a_split_to_a_version_without_nodes_fails_its_share(server: EchoServer) -> None:
    random.seed(13)
    async with grpc_etcd.aio.BalancedChannel(SERVICE, config=SPLIT) as channel:
        channel.update(snapshot((server, "v1")))
        stub = ApiStub(channel)
        await stub.ApiTest(Request(input="x"), timeout=10, metadata=[("x-version", "v1")])
        failed = 0
        for i in range(CALLS):
            try:
                await stub.ApiTest(Request(input=str(i)), timeout=10)
            except grpc.RpcError as exc:
                _refused(exc, grpc.StatusCode.UNAVAILABLE)
                failed += 1
    _share(failed)


def test_sync_etcd_down_and_a_short_deadline_say_why() -> None:
    with grpc_etcd.Registry(NOWHERE, timeout=5) as registry:
        channel = registry.channel(SERVICE)
        stub = ApiStub(channel)
        call = stub.ApiTest
        for start in (call, call.with_call, lambda *a, **k: call.future(*a, **k).result()):
            with pytest.raises(grpc.RpcError) as failed:
                start(Request(input="x"), timeout=0.3)
            _refused(failed.value, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert f"etcd at {NOWHERE} has not answered" in (failed.value.details() or "")


async def test_aio_etcd_down_and_a_short_deadline_say_why() -> None:
    async with grpc_etcd.aio.Registry(NOWHERE, timeout=5) as registry:
        channel = registry.channel(SERVICE)
        with pytest.raises(grpc.RpcError) as failed:
            await ApiStub(channel).ApiTest(Request(input="x"), timeout=0.3)
        _refused(failed.value, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert f"etcd at {NOWHERE} has not answered" in (failed.value.details() or "")
