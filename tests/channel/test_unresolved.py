"""No snapshot because etcd is unreachable: calls fail fast, as gRPC's do on a resolver error."""

from __future__ import annotations

import time

import grpc
import pytest

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo.api_pb2 import Request
from grpc_etcd.demo.api_pb2_grpc import ApiStub

SERVICE = "test.srv.unresolved"
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: every connect is refused
# The first read fails after the registry's request timeout (1 s); a call gets its answer then.
BOUND = 5.0


def _check(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert f"cannot resolve {SERVICE}" in details and "etcd" in details and NOWHERE in details


def test_sync_call_without_deadline_fails_at_once_naming_etcd() -> None:
    with grpc_etcd.Registry(NOWHERE, timeout=1) as registry:
        channel = registry.channel(SERVICE)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            ApiStub(channel).ApiTest(Request(input="x"))
        assert time.monotonic() - start < BOUND
        _check(failed.value)
        # Once etcd is known to be unreadable, a new call fails without waiting at all.
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as again:
            ApiStub(channel).ApiTest.future(Request(input="x")).result()
        assert time.monotonic() - start < 0.5
        _check(again.value)
        assert channel._connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE


def test_sync_wait_for_ready_still_waits_for_its_deadline() -> None:
    with grpc_etcd.Registry(NOWHERE, timeout=1) as registry:
        channel = registry.channel(SERVICE)
        with pytest.raises(grpc.RpcError):
            ApiStub(channel).ApiTest(Request(input="x"))  # the first read has failed now
        with pytest.raises(grpc.RpcError) as failed:
            ApiStub(channel).ApiTest(Request(input="x"), timeout=0.3, wait_for_ready=True)
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_aio_call_without_deadline_fails_at_once_naming_etcd() -> None:
    async with grpc_etcd.aio.Registry(NOWHERE, timeout=1) as registry:
        channel = registry.channel(SERVICE)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            await ApiStub(channel).ApiTest(Request(input="x"))
        assert time.monotonic() - start < BOUND
        _check(failed.value)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as again:
            await ApiStub(channel).ApiTest(Request(input="x"))
        assert time.monotonic() - start < 0.5
        _check(again.value)
        assert channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE


async def test_aio_wait_for_ready_still_waits_for_its_deadline() -> None:
    async with grpc_etcd.aio.Registry(NOWHERE, timeout=1) as registry:
        channel = registry.channel(SERVICE)
        with pytest.raises(grpc.RpcError):
            await ApiStub(channel).ApiTest(Request(input="x"))
        with pytest.raises(grpc.RpcError) as failed:
            await ApiStub(channel).ApiTest(Request(input="x"), timeout=0.3, wait_for_ready=True)
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
