"""Real grpc servers on loopback for the channel tests; each answers with its own name.

Every server speaks the demo ``/proto.Api/ApiTest`` and, for the streaming tests, three
``/test.Echo/*`` methods made from the same messages. An answer reads ``name|x-version|input``
so a test sees which server answered and which version reached it.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from grpc_etcd import Node, Snapshot
from grpc_etcd.demo import api_pb2, api_pb2_grpc

SERVICE = "test.srv.echo"
Request = api_pb2.Request
Response = api_pb2.Response

#: Reconnect quickly in tests (grpc's default first backoff is 1 s); also proves that
#: ``options`` reach every sub-channel.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
]

ECHO_METHODS = {
    "unary_stream": "/test.Echo/UnaryStream",
    "stream_unary": "/test.Echo/StreamUnary",
    "stream_stream": "/test.Echo/StreamStream",
}


def echo(channel: Any, kind: str) -> Any:
    """The multicallable of one ``/test.Echo`` method on ``channel`` (sync or aio)."""
    return getattr(channel, kind)(
        ECHO_METHODS[kind],
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def who(response: Response) -> str:
    """The name of the server that produced ``response``."""
    return response.output.split("|")[0]


def version_seen(response: Response) -> str:
    """The ``x-version`` the server saw (empty when none)."""
    return response.output.split("|")[1]


def free_port() -> int:
    """A loopback port nothing listens on (used for nodes that cannot be reached)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EchoServer:
    """One sync grpc server named ``name``; ``gate`` holds calls whose input is ``block``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.calls: Counter[str] = Counter()  # x-version seen -> count
        self.metadata: list[dict[str, str]] = []
        self.gate = threading.Event()
        self._cond = threading.Condition()
        self.blocked = 0
        self._server: grpc.Server | None = None
        #: Its grpc.health.v1 service: ``health.set("", NOT_SERVING)`` turns it unhealthy.
        self.health = health.HealthServicer()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int | None = None, credentials: Any = None) -> EchoServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        api_pb2_grpc.add_ApiServicer_to_server(_Servicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers([_echo_handlers(self)])
        target = f"127.0.0.1:{self.port if port is None else port}"
        if credentials is None:
            self.port = server.add_insecure_port(target)
        else:
            self.port = server.add_secure_port(target, credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.gate.set()
            self._server.stop(None).wait(5)
            self._server = None
            self.gate = threading.Event()

    def answer(self, request: Request, context: grpc.ServicerContext) -> Response:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        version = metadata.get("x-version", "")
        with self._cond:
            self.calls[version] += 1
            self.metadata.append(metadata)
        if request.input == "fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "asked to fail")
        if request.input == "block":
            with self._cond:
                self.blocked += 1
                self._cond.notify_all()
            self.gate.wait(30)
        return Response(output=f"{self.name}|{version}|{request.input}")

    def wait_blocked(self, count: int, timeout: float = 10) -> None:
        """Wait until ``count`` calls are held at the gate."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.blocked >= count, timeout):
                raise AssertionError(f"{self.name}: {self.blocked} calls blocked, not {count}")


class _Servicer(api_pb2_grpc.ApiServicer):
    def __init__(self, server: EchoServer) -> None:
        self._server = server

    def ApiTest(self, request: Request, context: grpc.ServicerContext) -> Response:
        return self._server.answer(request, context)


def _echo_handlers(server: EchoServer) -> grpc.GenericRpcHandler:
    def unary_stream(request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
        first = server.answer(request, context)
        for i in range(3):
            yield Response(output=f"{first.output}{i}")

    def stream_unary(requests: Iterable[Request], context: grpc.ServicerContext) -> Response:
        joined = "".join(r.input for r in requests)
        return server.answer(Request(input=joined), context)

    def stream_stream(
        requests: Iterable[Request], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        for request in requests:
            yield server.answer(request, context)

    options = {
        "request_deserializer": Request.FromString,
        "response_serializer": Response.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream, **options),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary, **options),
            "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream, **options),
        },
    )


def snapshot(
    *members: tuple[EchoServer, str] | tuple[EchoServer, str, str],
    revision: int = 1,
    service: str = SERVICE,
) -> Snapshot:
    """A snapshot with one node per ``(server, version[, id])``, as the watcher would make."""
    nodes = {}
    for member in members:
        server, version = member[0], member[1]
        node_id = member[2] if len(member) == 3 else server.name  # type: ignore[misc]
        key = f"/{service.replace('.', '/')}/{node_id}"
        nodes[key] = Node(service, node_id, server.address, version, key=key)
    return Snapshot(service, nodes, revision)


def dead_node(version: str, port: int, node_id: str = "dead") -> Snapshot:
    """A snapshot whose one node listens nowhere."""
    key = f"/{SERVICE.replace('.', '/')}/{node_id}"
    return Snapshot(SERVICE, {key: Node(SERVICE, node_id, f"127.0.0.1:{port}", version)}, 1)
