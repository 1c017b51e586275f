"""Issue 12's drift 2: server streams in flight when their server is killed -9.

Six workers (threads or tasks) open server streams one after another on a channel with no
config; each stream's first message comes 200 ms after it starts. One of three server
processes is killed -9 while streams on it have received nothing. Such a stream never reached
a server's answer, so gRPC's transparent retry sends it to another node: none of them may
fail (a stream that had received a message may). Both twins do this: their streams are the
call flow's until the first message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from server_process import SERVICE, ServerProcess
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd import Node, Snapshot
from grpc_etcd.demo import api_pb2
from grpc_etcd.testing import EtcdServer

WORKERS = 6
#: Streams each worker completes after the kill before the test stops them.
AFTER = 2
#: chaos_server.py holds the stream this long before its first message.
FIRST_MESSAGE = api_pb2.Request(input="sleep:0.2")


class Tally:
    """What the workers saw: streams that failed (with how many responses they had)."""

    def __init__(self) -> None:
        self.failed: list[tuple[int, str]] = []
        self.ended_after_kill = 0
        self.killed = False
        self.stop = False
        self._cond = threading.Condition()

    def ended(self, received: int, error: str | None) -> None:
        with self._cond:
            if error is not None:
                self.failed.append((received, error))
            if self.killed:
                self.ended_after_kill += 1
                self._cond.notify_all()

    def wait_after_kill(self, count: int, timeout: float) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.ended_after_kill >= count, timeout), (
                f"only {self.ended_after_kill} streams ended after the kill"
            )

    def mark_killed(self) -> None:
        with self._cond:
            self.killed = True


def _nodes(*processes: ServerProcess) -> Snapshot:
    nodes = {p.key: Node(SERVICE, p.name, p.address, "v1", key=p.key) for p in processes}
    return Snapshot(SERVICE, nodes, 1)


@pytest.fixture
def servers(etcd: EtcdServer) -> Iterator[list[ServerProcess]]:
    made = [ServerProcess(etcd.endpoint, name) for name in ("a", "b", "c")]
    yield made
    for process in made:
        process.kill()


def _stream(channel: Any) -> Any:
    return channel.unary_stream(
        "/test.Echo/UnaryStream",
        request_serializer=api_pb2.Request.SerializeToString,
        response_deserializer=api_pb2.Response.FromString,
    )


def _kill_while_streams_wait(victim: ServerProcess, tally: Tally) -> None:
    """Kill ``victim`` right after a stream began on it (so it has received nothing)."""
    while victim.read_line(10) != "begin sleep:0.2":
        pass
    victim.proc.kill()
    tally.mark_killed()


def _ready(channel: Any, servers: list[ServerProcess]) -> Callable[[], bool]:
    def check() -> bool:
        states = channel.subchannel_states()
        return all(states.get(s.address) == grpc.ChannelConnectivity.READY for s in servers)

    return check


def _unreceived(tally: Tally) -> list[tuple[int, str]]:
    return [failure for failure in tally.failed if failure[0] == 0]


def test_sync_server_streams_that_received_nothing_survive_a_kill9(
    servers: list[ServerProcess],
) -> None:
    tally = Tally()
    with grpc_etcd.BalancedChannel(SERVICE) as channel:
        channel.update(_nodes(*servers))
        wait_for(_ready(channel, servers), 10, "every node READY")
        stream = _stream(channel)

        def work() -> None:
            while not tally.stop:
                received = 0
                try:
                    for _ in stream(FIRST_MESSAGE, timeout=10):
                        received += 1
                    tally.ended(received, None)
                except grpc.RpcError as exc:
                    tally.ended(received, f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]

        workers = [threading.Thread(target=work) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        try:
            _kill_while_streams_wait(servers[0], tally)
            tally.wait_after_kill(WORKERS * AFTER, 30)
        finally:
            tally.stop = True
            for worker in workers:
                worker.join(30)
    assert _unreceived(tally) == []


async def test_aio_server_streams_that_received_nothing_survive_a_kill9(
    servers: list[ServerProcess],
) -> None:
    tally = Tally()
    async with grpc_etcd.aio.BalancedChannel(SERVICE) as channel:
        channel.update(_nodes(*servers))
        ready = _ready(channel, servers)

        async def check() -> bool:
            return ready()

        await async_wait_for(check, 10, "every node READY")
        stream = _stream(channel)

        async def work() -> None:
            while not tally.stop:
                received = 0
                try:
                    async for _ in stream(FIRST_MESSAGE, timeout=10):
                        received += 1
                    tally.ended(received, None)
                except grpc.RpcError as exc:
                    tally.ended(received, f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]

        workers = [asyncio.create_task(work()) for _ in range(WORKERS)]
        try:
            await asyncio.to_thread(_kill_while_streams_wait, servers[0], tally)
            await asyncio.to_thread(tally.wait_after_kill, WORKERS * AFTER, 30)
        finally:
            tally.stop = True
            await asyncio.gather(*workers)
    assert _unreceived(tally) == []
