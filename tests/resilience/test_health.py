"""Health watching per sub-channel against real servers (sync and aio), and its pure rules."""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_etcd._channel._health import AsyncHealthWatch, HealthState, HealthWatch
from grpc_etcd.backoff import Backoff

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "test.srv.echo"
FAST = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 300)]


def test_state_rules() -> None:
    state = HealthState(Backoff(0.1, 0.1))
    assert not state.serving and not state.answered  # connecting until the first answer
    assert state.on_status(SERVING) and state.serving and state.answered
    assert not state.on_status(SERVING)
    assert state.on_status(NOT_SERVING) and not state.serving
    state.on_status(SERVING)
    changed, delay = state.on_end(grpc.StatusCode.UNAVAILABLE)
    assert changed and not state.serving and delay is not None and delay <= 0.1
    changed, delay = state.on_end(grpc.StatusCode.UNIMPLEMENTED)
    assert changed and state.serving and delay is None and state.finished


class Changes:
    """Counts on_change() calls and lets a test wait for a value of ``serving``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0

    def __call__(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait(self, watch: HealthWatch, serving: bool, timeout: float = 10) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: watch.serving is serving, timeout), serving


def _server(servicer: health.HealthServicer | None, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    if servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def test_sync_watch_follows_serving_not_serving_and_a_restart() -> None:
    servicer = health.HealthServicer()
    servicer.set(SERVICE, SERVING)
    server, port = _server(servicer)
    changes = Changes()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=FAST) as channel:
        watch = HealthWatch(channel, SERVICE, changes, name="a")
        try:
            changes.wait(watch, True)
            servicer.set(SERVICE, NOT_SERVING)
            changes.wait(watch, False)
            servicer.set(SERVICE, SERVING)
            changes.wait(watch, True)
            server.stop(None).wait()
            changes.wait(watch, False)
            servicer = health.HealthServicer()
            servicer.set(SERVICE, SERVING)
            server, _ = _server(servicer, port)
            changes.wait(watch, True)
            assert changes.count == 5
        finally:
            watch.close()
            server.stop(None)


def test_sync_watch_counts_a_server_without_health_as_serving() -> None:
    server, port = _server(None)
    changes = Changes()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = HealthWatch(channel, "", changes)
        changes.wait(watch, True)
        watch.close()
    server.stop(None)


def test_aio_watch_follows_serving_and_not_serving() -> None:
    async def main() -> None:
        servicer = health.aio.HealthServicer()
        await servicer.set(SERVICE, SERVING)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        changed = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = AsyncHealthWatch(channel, SERVICE, changed.set, name="a")
            for expected, status in ((True, NOT_SERVING), (False, SERVING), (True, None)):
                await asyncio.wait_for(changed.wait(), 10)
                changed.clear()
                assert watch.serving is expected
                if status is not None:
                    await servicer.set(SERVICE, status)
            watch.close()
            await watch.wait_closed()
        await server.stop(None)

    asyncio.run(main())
