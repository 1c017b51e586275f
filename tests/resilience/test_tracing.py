"""OpenTelemetry's own gRPC instrumentation through a BalancedChannel (sync and asyncio): one
client span per call, made on the sub-channel of the node that answered and naming it as its
peer (``server.address``, ``server.port``), and the trace goes on through a
``propagate_route()`` server's own calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    GrpcAioInstrumentorClient,
    GrpcInstrumentorClient,
    GrpcInstrumentorServer,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.testing import EtcdServer

BACK, FRONT = "trace.srv.back", "trace.srv.front"
METHOD = "/proto.Api/ApiTest"
CALLS = 8
#: Each back node's port, by its name.
PORTS: dict[str, int] = {}


class _Back(api_pb2_grpc.ApiServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    def ApiTest(self, request: Any, context: grpc.ServicerContext) -> Any:
        trace.get_current_span().set_attribute("test.node", self.name)
        return api_pb2.Response(output=f"{self.name} {grpc_etcd.current_route().get('version')}")


class _Front(api_pb2_grpc.ApiServicer):
    """Calls the back service through its own BalancedChannel, inside the incoming call."""

    def __init__(self, back: api_pb2_grpc.ApiStub) -> None:
        self.back = back

    def ApiTest(self, request: Any, context: grpc.ServicerContext) -> Any:
        return api_pb2.Response(output="front>" + self.back.ApiTest(request, timeout=5).output)


_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The grpc client (sync and aio) and server instrumentors, as a user turns them on.

    The client instrumentors take their tracer from the global provider (not from
    ``instrument(tracer_provider=)``), so the global one is set, once for the process.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    instrumentors = [
        GrpcInstrumentorClient(),
        GrpcAioInstrumentorClient(),
        GrpcInstrumentorServer(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument()  # type: ignore[no-untyped-call]
    try:
        yield _EXPORTER
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()  # type: ignore[no-untyped-call]


def _serve(registry: grpc_etcd.Registry, service: str, servicer: Any, version: str) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[grpc_etcd.propagate_route()])
    api_pb2_grpc.add_ApiServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    registry.register(service, address=f"127.0.0.1:{port}", version=version)
    if isinstance(servicer, _Back):
        PORTS[servicer.name] = port
    return server


def _api(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == METHOD]


def _check(exporter: InMemorySpanExporter, answered: list[str]) -> None:
    """Each call: one client span, whose one server child is on the node that answered, and
    which names that node as its peer."""
    found = _api(exporter)
    clients = [s for s in found if s.kind is trace.SpanKind.CLIENT]
    servers = {s.parent.span_id: s for s in found if s.kind is trace.SpanKind.SERVER and s.parent}
    assert len(clients) == CALLS, [s.kind for s in found]
    nodes = sorted(str(servers[c.context.span_id].attributes["test.node"]) for c in clients)
    assert nodes == sorted(answered)
    assert len(set(answered)) == 2, "the calls were balanced over both nodes"
    for client in clients:
        node = str(servers[client.context.span_id].attributes["test.node"])
        peer = (client.attributes["server.address"], client.attributes["server.port"])
        assert peer == ("127.0.0.1", PORTS[node]), (node, peer)


def test_sync_calls_through_a_balanced_channel_are_traced(
    etcd: EtcdServer, spans: InMemorySpanExporter
) -> None:
    started = []
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        started += [_serve(registry, BACK, _Back(f"b{i}"), "v1") for i in range(2)]
        channel = registry.channel(BACK, policy="round_robin")
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("caller") as caller:
            answered = [
                stub.ApiTest(api_pb2.Request(input="x"), timeout=5).output.split()[0]
                for _ in range(CALLS)
            ]
        for server in started:
            server.stop(None)
    _check(spans, answered)
    assert {s.context.trace_id for s in _api(spans)} == {caller.get_span_context().trace_id}


def test_the_trace_crosses_a_propagate_route_server(
    etcd: EtcdServer, spans: InMemorySpanExporter
) -> None:
    started = []
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        started.append(_serve(registry, BACK, _Back("b0"), "v2"))
        back = api_pb2_grpc.ApiStub(registry.channel(BACK))  # type: ignore[no-untyped-call]
        started.append(_serve(registry, FRONT, _Front(back), "v2"))
        front = api_pb2_grpc.ApiStub(registry.channel(FRONT))  # type: ignore[no-untyped-call]
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("caller") as caller, grpc_etcd.route(version="v2"):
            reply = front.ApiTest(api_pb2.Request(input="x"), timeout=5).output
        for server in started:
            server.stop(None)
    assert reply == "front>b0 v2", "the route went on too"
    chain = sorted(_api(spans), key=lambda s: s.start_time or 0)
    assert [s.kind for s in chain] == [trace.SpanKind.CLIENT, trace.SpanKind.SERVER] * 2
    parents = [caller.get_span_context().span_id] + [s.context.span_id for s in chain[:-1]]
    assert [s.parent.span_id if s.parent else None for s in chain] == parents


def test_aio_calls_through_a_balanced_channel_are_traced(
    etcd: EtcdServer, spans: InMemorySpanExporter
) -> None:
    started = []
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        started += [_serve(registry, BACK, _Back(f"b{i}"), "v1") for i in range(2)]

        async def main() -> list[str]:
            async with grpc_etcd.aio.Registry(etcd.endpoint) as aio_registry:
                channel = aio_registry.channel(BACK, policy="round_robin")
                stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
                replies = [
                    (await stub.ApiTest(api_pb2.Request(input="x"), timeout=5)).output
                    for _ in range(CALLS)
                ]
                await channel.close()
                return [reply.split()[0] for reply in replies]

        answered = asyncio.run(main())
        for server in started:
            server.stop(None)
    _check(spans, answered)
