"""``grpc_etcd.serve``: a SIGTERM'd server in its own process loses no call (sync and aio)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_process import SERVICE, Load, ServerProcess, who

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.testing import EtcdServer

Request = api_pb2.Request


def test_sigterm_under_load_fails_no_call(etcd: EtcdServer) -> None:
    servers = [ServerProcess(etcd.endpoint, name) for name in ("a", "b")]
    try:
        with grpc_etcd.Registry(etcd.endpoint) as registry, Load(registry.channel(SERVICE)) as load:
            deadline = time.monotonic() + 10
            while load.answered["a"] < 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            servers[0].terminate()
            assert servers[0].wait(15) == 0
            before = load.answered["b"]
            while load.answered["b"] < before + 50 and time.monotonic() < deadline + 10:
                time.sleep(0.01)
    finally:
        for server in servers:
            server.kill()
    assert load.failures == []
    assert load.answered["a"] >= 50 and load.answered["b"] >= 50


def test_a_call_in_flight_finishes_and_health_turns_not_serving(etcd: EtcdServer) -> None:
    server = ServerProcess(etcd.endpoint, "a", "--drain-delay", "0")
    try:
        with grpc.insecure_channel(server.address) as direct:
            watch = health_pb2_grpc.HealthStub(direct).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            api = api_pb2_grpc.ApiStub(direct)  # type: ignore[no-untyped-call]
            slow = api.ApiTest.future(Request(input="sleep:1.0"), timeout=10)
            assert server.read_line(10) == "begin sleep:1.0"
            server.terminate()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert who(slow.result()) == "a"
        assert server.read_line(10) == "drained"
        assert server.wait(10) == 0
    finally:
        server.kill()


def _start_server() -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    return server, address


def test_serve_with_an_event_deregisters_then_stops(etcd: EtcdServer) -> None:
    server, address = _start_server()
    stop = threading.Event()
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registration = registry.register(SERVICE, address=address)
        thread = threading.Thread(
            target=grpc_etcd.serve,
            args=(server, registration),
            kwargs={"stop": stop, "drain_delay": 0.0, "health": True},
        )
        thread.start()
        with grpc.insecure_channel(address) as direct:
            check = health_pb2_grpc.HealthStub(direct).Check
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            assert check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        assert len(registry.nodes(SERVICE)) == 1
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        assert registry.nodes(SERVICE) == []
    with grpc.insecure_channel(address) as direct, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(direct).Check(health_pb2.HealthCheckRequest(), timeout=1)


def test_aio_serve_with_an_event(etcd: EtcdServer) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        stop = asyncio.Event()
        async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
            registration = await registry.register(SERVICE, address=address)
            serving = asyncio.create_task(
                grpc_etcd.aio.serve(server, registration, stop=stop, health=True, drain_delay=0)
            )
            async with grpc.aio.insecure_channel(address) as direct:
                check = health_pb2_grpc.HealthStub(direct).Check
                reply = await check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                stop.set()
                await asyncio.wait_for(serving, 10)
                assert await registry.nodes(SERVICE) == []
                with pytest.raises(grpc.aio.AioRpcError):
                    await check(health_pb2.HealthCheckRequest(), timeout=1)

    asyncio.run(main())


def test_serve_outside_the_main_thread_needs_an_event() -> None:
    server, _ = _start_server()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            grpc_etcd.serve(server, [])
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    server.stop(None)
    assert len(errors) == 1 and "stop=threading.Event()" in str(errors[0])


@pytest.mark.parametrize("kwargs", [{"grace": -1.0}, {"drain_delay": -0.5}])
def test_negative_times_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        grpc_etcd.serve(None, [], stop=threading.Event(), **kwargs)  # type: ignore[arg-type]


class _SlowToClose:
    """A registration whose close() returns only once every other one is closing too."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier
        self.key = f"/test/srv/echo/{id(self)}"

    def close(self) -> None:
        self.barrier.wait(timeout=10)  # one close at a time would break the barrier

    async def aclose(self) -> None:
        await asyncio.to_thread(self.barrier.wait, 10)


def test_sync_drain_closes_the_registrations_at_once() -> None:
    server, _ = _start_server()
    barrier = threading.Barrier(3)
    grpc_etcd.drain(server, [_SlowToClose(barrier) for _ in range(3)], drain_delay=0)  # type: ignore[list-item]
    assert not barrier.broken


def test_aio_drain_closes_the_registrations_at_once() -> None:
    barrier = threading.Barrier(3)
    closing = [_SlowToClose(barrier) for _ in range(3)]
    for each in closing:
        each.close = each.aclose  # type: ignore[method-assign]

    async def main() -> None:
        server = grpc.aio.server()
        server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await grpc_etcd.aio.drain(server, closing, drain_delay=0)  # type: ignore[arg-type]

    asyncio.run(main())
    assert not barrier.broken


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_serve_says_when_it_starts_draining_and_when_it_has_stopped(
    etcd: EtcdServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="grpc_etcd.serve")
    if kind == "sync":
        server, address = _start_server()
        stop = threading.Event()
        stop.set()
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            registration = registry.register(SERVICE, address=address)
            grpc_etcd.serve(server, registration, stop=stop, drain_delay=0)
            key = registration.key
    else:

        async def main() -> str:
            server = grpc.aio.server()
            address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
            await server.start()
            stop = asyncio.Event()
            stop.set()
            async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
                registration = await registry.register(SERVICE, address=address)
                await grpc_etcd.aio.serve(server, registration, stop=stop, drain_delay=0)
                return registration.key

        key = asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if r.name == "grpc_etcd.serve"]
    assert len(said) == 2, said
    assert said[0].startswith(f"draining: NOT_SERVING, deregistering {key}, stopping in 0s")
    assert said[1].startswith("stopped: drained in ")
