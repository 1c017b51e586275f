"""Throughput and latency of BalancedChannel next to plain grpcio channels, same servers.

    .venv/bin/python benchmarks/channel_throughput.py [--rounds 5] [--seconds 2] [--quick]

One server (an asyncio grpc server answering the demo ``ApiTest``, in its own process, so the
client's CPU is not shared with it): sync clients with 1 and 8 threads, asyncio clients with
1 and 64 calls in flight, each as
  - a plain ``grpc.insecure_channel`` to the server, sending ``x-version: v1`` itself;
  - a ``BalancedChannel(version="v1")`` holding that one node (it adds the same metadata).
Three servers (three processes): the BalancedChannel with three v1 nodes against grpc's own
``round_robin`` over the static list ``ipv4:127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3``.

Each scenario runs several rounds, alternating which channel goes first; the machine is small
and noisy, so the table shows the median calls/s over rounds, p50 and p99 latency over all
calls, and the ratio of the medians. Markdown output.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from grpc_etcd import BalancedChannel, Node, Snapshot
from grpc_etcd import aio as channel_aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc

SERVICE = "bench.throughput"
VERSION = (("x-version", "v1"),)


class _Servicer(api_pb2_grpc.ApiServicer):
    async def ApiTest(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        return api_pb2.Response(output=request.input)


def _serve(port_queue: Any) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_ApiServicer_to_server(_Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(run())


def _snapshot(addresses: list[str]) -> Snapshot:
    return Snapshot(
        SERVICE,
        {f"/bench/{i}": Node(SERVICE, str(i), a, "v1") for i, a in enumerate(addresses)},
        1,
    )


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, calls: list[list[float]], elapsed: float) -> None:
        self.rps.append(sum(len(c) for c in calls) / elapsed)
        for c in calls:
            self.latencies.extend(c)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


# ------------------------------------------------------------------ sync


def _sync_round(
    stub: Any, metadata: Any, threads: int, seconds: float
) -> tuple[list[list[float]], float]:
    request = api_pb2.Request(input="x")
    start = time.perf_counter()
    stop = start + seconds
    lists: list[list[float]] = [[] for _ in range(threads)]

    def work(latencies: list[float]) -> None:
        call, clock = stub.ApiTest, time.perf_counter
        while True:
            began = clock()
            if began >= stop:
                return
            call(request, metadata=metadata, timeout=10)
            latencies.append(clock() - began)

    workers = [threading.Thread(target=work, args=(lst,)) for lst in lists]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return lists, time.perf_counter() - start


def run_sync(
    channels: dict[str, tuple[Any, Any]], threads: int, rounds: int, seconds: float
) -> dict[str, Result]:
    stubs = {name: (api_pb2_grpc.ApiStub(ch), md) for name, (ch, md) in channels.items()}
    for stub, md in stubs.values():  # warm up
        _sync_round(stub, md, threads, 0.5)
    results = {name: Result() for name in stubs}
    names = list(stubs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            stub, md = stubs[name]
            results[name].add(*_sync_round(stub, md, threads, seconds))
    return results


# ------------------------------------------------------------------ asyncio


async def _aio_round(
    stub: Any, metadata: Any, concurrency: int, seconds: float
) -> tuple[list[list[float]], float]:
    request = api_pb2.Request(input="x")
    start = time.perf_counter()
    stop = start + seconds
    lists: list[list[float]] = [[] for _ in range(concurrency)]

    async def work(latencies: list[float]) -> None:
        call, clock = stub.ApiTest, time.perf_counter
        while True:
            began = clock()
            if began >= stop:
                return
            await call(request, metadata=metadata, timeout=10)
            latencies.append(clock() - began)

    await asyncio.gather(*(work(lst) for lst in lists))
    return lists, time.perf_counter() - start


async def _run_aio(
    make: Callable[[], dict[str, tuple[Any, Any]]],
    concurrency: int,
    rounds: int,
    seconds: float,
) -> dict[str, Result]:
    channels = make()
    for channel, _ in channels.values():
        await channel.channel_ready()
    stubs = {name: (api_pb2_grpc.ApiStub(ch), md) for name, (ch, md) in channels.items()}
    for stub, md in stubs.values():
        await _aio_round(stub, md, concurrency, 0.5)
    results = {name: Result() for name in stubs}
    names = list(stubs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            stub, md = stubs[name]
            results[name].add(*await _aio_round(stub, md, concurrency, seconds))
    for channel, _ in channels.values():
        await channel.close()
    return results


def run_aio(
    make: Callable[[], dict[str, tuple[Any, Any]]], concurrency: int, rounds: int, seconds: float
) -> dict[str, Result]:
    return asyncio.run(_run_aio(make, concurrency, rounds, seconds))


# ------------------------------------------------------------------ scenarios


def _ready(channel: BalancedChannel, n: int) -> BalancedChannel:
    deadline = time.monotonic() + 30
    while (
        sum(s == grpc.ChannelConnectivity.READY for s in channel.subchannel_states().values()) < n
    ):
        if time.monotonic() > deadline:
            raise SystemExit("the servers never got READY")
        time.sleep(0.01)
    return channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s")
    args = parser.parse_args()
    rounds, seconds = (2, 1.0) if args.quick else (args.rounds, args.seconds)

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    servers = [ctx.Process(target=_serve, args=(ports,), daemon=True) for _ in range(3)]
    for server in servers:
        server.start()
    addresses = sorted(f"127.0.0.1:{ports.get(timeout=30)}" for _ in servers)
    one, three = addresses[:1], addresses

    def sync_one() -> dict[str, tuple[Any, Any]]:
        balanced = BalancedChannel(SERVICE, version="v1")
        balanced.update(_snapshot(one))
        plain = grpc.insecure_channel(one[0])
        grpc.channel_ready_future(plain).result(timeout=30)
        return {"grpc": (plain, VERSION), "BalancedChannel": (_ready(balanced, 1), None)}

    def sync_three() -> dict[str, tuple[Any, Any]]:
        balanced = BalancedChannel(SERVICE, version="v1")
        balanced.update(_snapshot(three))
        plain = grpc.insecure_channel(
            "ipv4:" + ",".join(three), options=[("grpc.lb_policy_name", "round_robin")]
        )
        grpc.channel_ready_future(plain).result(timeout=30)
        return {
            "grpc round_robin": (plain, VERSION),
            "BalancedChannel": (_ready(balanced, 3), None),
        }

    def aio_one() -> dict[str, tuple[Any, Any]]:
        balanced = channel_aio.BalancedChannel(SERVICE, version="v1")
        balanced.update(_snapshot(one))
        return {
            "grpc.aio": (grpc.aio.insecure_channel(one[0]), VERSION),
            "aio.BalancedChannel": (balanced, None),
        }

    def aio_three() -> dict[str, tuple[Any, Any]]:
        balanced = channel_aio.BalancedChannel(SERVICE, version="v1")
        balanced.update(_snapshot(three))
        plain = grpc.aio.insecure_channel(
            "ipv4:" + ",".join(three), options=[("grpc.lb_policy_name", "round_robin")]
        )
        return {"grpc.aio round_robin": (plain, VERSION), "aio.BalancedChannel": (balanced, None)}

    table: list[tuple[str, dict[str, Result]]] = []
    for label, make, threads in (
        ("1 server, sync, 1 thread", sync_one, 1),
        ("1 server, sync, 8 threads", sync_one, 8),
        ("3 servers, sync, 8 threads", sync_three, 8),
    ):
        channels = make()
        table.append((label, run_sync(channels, threads, rounds, seconds)))
        for channel, _ in channels.values():
            channel.close()
    for label, make_aio, concurrency in (
        ("1 server, aio, 1 in flight", aio_one, 1),
        ("1 server, aio, 64 in flight", aio_one, 64),
        ("3 servers, aio, 64 in flight", aio_three, 64),
    ):
        table.append((label, run_aio(make_aio, concurrency, rounds, seconds)))
    for server in servers:
        server.kill()

    print(
        f"\n{rounds} rounds of {seconds:g} s per channel, alternating; client and servers "
        f"on one {multiprocessing.cpu_count()}-core machine\n"
    )
    print("| scenario | channel | median calls/s | p50 µs | p99 µs | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for label, results in table:
        (base_name, base), (ours_name, ours) = results.items()
        for name, result in ((base_name, base), (ours_name, ours)):
            ratio = statistics.median(result.rps) / statistics.median(base.rps)
            print(
                f"| {label} | {name} | {statistics.median(result.rps):,.0f} "
                f"| {result.quantile(0.5):.0f} | {result.quantile(0.99):.0f} "
                f"| {ratio:.2f}x |"
            )


if __name__ == "__main__":
    main()
