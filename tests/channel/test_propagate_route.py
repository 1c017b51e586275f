"""propagate_route(): a service in the middle of a call chain passes the caller's version on.

client --x-version--> middle (propagate_route) --BalancedChannel, no version--> backend v1 | v2
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from echo_servers import EchoServer, Request, Response, snapshot, version_seen, who

from grpc_etcd import BalancedChannel, current_route, route
from grpc_etcd import aio as channel_aio
from grpc_etcd.demo import api_pb2_grpc
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.server import propagate_route, propagate_route_aio

BACKEND = "test.srv.backend"
MIDDLE = "test.srv.middle"
STREAM = "/test.Middle/Stream"

Start = Callable[..., EchoServer]


def _stream_handler(behavior: Callable[..., Any]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.Middle",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                behavior,
                request_deserializer=Request.FromString,
                response_serializer=Response.SerializeToString,
            ),
        },
    )


class _Middle(api_pb2_grpc.ApiServicer):
    def __init__(self, backend: ApiStub) -> None:
        self._backend = backend

    def ApiTest(self, request: Request, context: grpc.ServicerContext) -> Response:
        answer = self._backend.ApiTest(Request(input=request.input), timeout=5)
        return Response(output=f"mid>{answer.output}")

    def stream(self, request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
        # Each step of a response generator runs after the handler returned: still routed.
        for _ in range(2):
            yield Response(output=self._backend.ApiTest(Request(input="s"), timeout=5).output)
        yield Response(output=f"route={dict(current_route())}")


@pytest.fixture
def backends(start_server: Start) -> tuple[EchoServer, EchoServer]:
    return start_server("b1"), start_server("b2")


def test_two_hops_sync(backends: tuple[EchoServer, EchoServer]) -> None:
    b1, b2 = backends
    with BalancedChannel(BACKEND) as to_backend:
        to_backend.update(snapshot((b1, "v1"), (b2, "v2"), service=BACKEND))
        middle = _Middle(ApiStub(to_backend))
        # One worker: every call reuses the same thread, so a leaked route would show.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=1), interceptors=[propagate_route()]
        )
        api_pb2_grpc.add_ApiServicer_to_server(middle, server)
        server.add_generic_rpc_handlers([_stream_handler(middle.stream)])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
                stub = ApiStub(plain)
                for version, backend in (("v1", "b1"), ("v2", "b2")) * 10:
                    answer = stub.ApiTest(
                        Request(input="x"), metadata=[("x-version", version)], timeout=5
                    )
                    assert answer.output == f"mid>{backend}|{version}|x"
                # No version in, none out: the route did not stay on the worker thread.
                assert version_seen(stub.ApiTest(Request(input="x"), timeout=5)) == ""

                stream = plain.unary_stream(STREAM, Request.SerializeToString, Response.FromString)
                outputs = [
                    r.output for r in stream(Request(), metadata=[("x-version", "v2")], timeout=5)
                ]
                assert outputs == ["b2|v2|s", "b2|v2|s", "route={'version': 'v2'}"]

            # The first hop balanced too: the middle is registered as v1 and v2 (one address).
            middle_node = EchoServer("middle")
            middle_node.port = port
            with BalancedChannel(MIDDLE) as to_middle:
                to_middle.update(
                    snapshot((middle_node, "v1", "m1"), (middle_node, "v2", "m2"), service=MIDDLE)
                )
                with route(version="v2"):
                    answer = ApiStub(to_middle).ApiTest(Request(input="y"), timeout=5)
                assert answer.output == "mid>b2|v2|y"
        finally:
            server.stop(None)


class _AioMiddle(api_pb2_grpc.ApiServicer):
    def __init__(self, backend: ApiStub) -> None:
        self._backend = backend

    async def ApiTest(  # type: ignore[override]
        self, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Response:
        answer = await self._backend.ApiTest(Request(input=request.input), timeout=5)
        return Response(output=f"mid>{answer.output}")

    async def stream(
        self, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        for _ in range(2):
            answer = await self._backend.ApiTest(Request(input="s"), timeout=5)
            yield Response(output=answer.output)
        yield Response(output=f"route={dict(current_route())}")


async def test_two_hops_aio(backends: tuple[EchoServer, EchoServer]) -> None:
    b1, b2 = backends
    async with channel_aio.BalancedChannel(BACKEND) as to_backend:
        to_backend.update(snapshot((b1, "v1"), (b2, "v2"), service=BACKEND))
        middle = _AioMiddle(ApiStub(to_backend))
        server = grpc.aio.server(interceptors=[propagate_route_aio()])
        api_pb2_grpc.add_ApiServicer_to_server(middle, server)
        server.add_generic_rpc_handlers([_stream_handler(middle.stream)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                stub = ApiStub(plain)
                for version, backend in (("v1", "b1"), ("v2", "b2")) * 10:
                    answer = await stub.ApiTest(
                        Request(input="x"), metadata=[("x-version", version)], timeout=5
                    )
                    assert answer.output == f"mid>{backend}|{version}|x"
                assert version_seen(await stub.ApiTest(Request(input="x"), timeout=5)) == ""

                stream = plain.unary_stream(STREAM, Request.SerializeToString, Response.FromString)
                outputs = [
                    r.output
                    async for r in stream(Request(), metadata=[("x-version", "v1")], timeout=5)
                ]
                assert outputs == ["b1|v1|s", "b1|v1|s", "route={'version': 'v1'}"]

            middle_node = EchoServer("middle")
            middle_node.port = port
            async with channel_aio.BalancedChannel(MIDDLE) as to_middle:
                to_middle.update(
                    snapshot((middle_node, "v1", "m1"), (middle_node, "v2", "m2"), service=MIDDLE)
                )
                with route(version="v1"):
                    answer = await ApiStub(to_middle).ApiTest(Request(input="y"), timeout=5)
                assert who(answer) == "mid>b1" and answer.output == "mid>b1|v1|y"
        finally:
            await server.stop(None)
