"""p50/p99 of unary calls when one of three servers is 10x slower, per policy, in one run.

    .venv/bin/python benchmarks/slow_node.py [--calls 3000] [--rounds 3] [--concurrency 2]
                                             [--fast-ms 2] [--slow-ms 20] [--quick]

Three asyncio grpc servers, each in its own process on 127.0.0.1, answer the demo
``ApiTest`` after sleeping a service time the parent sets through shared memory: ``--fast-ms``
normally, ``--slow-ms`` on server 0 while a "slow" scenario runs. The client is one asyncio
``aio.BalancedChannel`` per scenario (fed a static snapshot, no etcd) with ``--concurrency``
calls in flight: ``random``, ``round_robin``, ``least_request`` and ``p2c_ewma`` with server 0
slow, and the baseline, ``random`` with all three fast. The scenarios take turns in
``--rounds`` rounds (rotating the order, so they share the machine's noise); each channel
keeps its policy's statistics across rounds, as a long-lived channel would. The table gives
p50/p90/p99 over every call, the share of calls that reached the slow server, and each p99
against the all-fast baseline's (goal: p2c_ewma within 1.5x; random is expected near 10x).
Bounded: ``--calls`` per scenario, and every round stops after ``ROUND_LIMIT`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from grpc_etcd import Node, Snapshot
from grpc_etcd import aio as channel_aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc

SERVICE = "bench.slow_node"
POLICIES = ("random", "round_robin", "least_request", "p2c_ewma")
BASELINE = "all fast (random)"
ROUND_LIMIT = 60.0  # seconds: a round that takes longer (a stuck server) stops there
CALL_TIMEOUT = 10.0


class _Servicer(api_pb2_grpc.ApiServicer):
    def __init__(self, name: str, delay: Any) -> None:
        self._name = name
        self._delay = delay  # multiprocessing.Value("d"): seconds, set by the parent

    async def ApiTest(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(self._delay.value)
        return api_pb2.Response(output=self._name)


def _serve(name: str, delay: Any, port_queue: Any) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_ApiServicer_to_server(_Servicer(name, delay), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put((name, port))
        await server.wait_for_termination()

    asyncio.run(run())


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    slow_hits: int = 0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def _round(stub: Any, calls: int, concurrency: int, result: Result) -> None:
    request = api_pb2.Request(input="x")
    left = calls
    stop = time.monotonic() + ROUND_LIMIT

    async def work() -> None:
        nonlocal left
        clock = time.perf_counter
        while left > 0 and time.monotonic() < stop:
            left -= 1
            began = clock()
            response = await stub.ApiTest(request, timeout=CALL_TIMEOUT)
            result.latencies.append(clock() - began)
            result.slow_hits += response.output == "slow"

    await asyncio.gather(*(work() for _ in range(concurrency)))


async def _run(
    addresses: dict[str, str], delays: dict[str, Any], args: argparse.Namespace
) -> dict[str, Result]:
    snapshot = Snapshot(
        SERVICE,
        {f"/bench/{name}": Node(SERVICE, name, a, "v1") for name, a in addresses.items()},
        1,
    )
    scenarios = {**{p: p for p in POLICIES}, BASELINE: "random"}
    channels = {}
    for label, policy in scenarios.items():
        channel = channel_aio.BalancedChannel(SERVICE, policy=policy)
        channel.update(snapshot)
        await asyncio.wait_for(channel.channel_ready(), 30)
        channels[label] = channel
    stubs = {label: api_pb2_grpc.ApiStub(ch) for label, ch in channels.items()}  # type: ignore[no-untyped-call]
    for stub in stubs.values():  # warm up: connections to all three, not timed
        await _round(stub, 60, args.concurrency, Result())
    results = {label: Result() for label in stubs}
    labels = list(stubs)
    per_round = max(1, args.calls // args.rounds)
    for r in range(args.rounds):
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            delays["slow"].value = (args.fast_ms if label == BASELINE else args.slow_ms) / 1e3
            await _round(stubs[label], per_round, args.concurrency, results[label])
    for channel in channels.values():
        await channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="calls in flight")
    parser.add_argument("--fast-ms", type=float, default=2.0, help="a fast server's service time")
    parser.add_argument("--slow-ms", type=float, default=20.0, help="the slow server's")
    parser.add_argument("--quick", action="store_true", help="600 calls per scenario")
    args = parser.parse_args()
    if args.quick:
        args.calls = 600

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    delays = {name: ctx.Value("d", args.fast_ms / 1e3) for name in ("slow", "fast1", "fast2")}
    servers = [
        ctx.Process(target=_serve, args=(name, delay, ports), daemon=True)
        for name, delay in delays.items()
    ]
    for server in servers:
        server.start()
    try:
        addresses = {}
        for _ in servers:
            name, port = ports.get(timeout=30)
            addresses[name] = f"127.0.0.1:{port}"
        started = time.monotonic()
        results = asyncio.run(_run(addresses, delays, args))
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            if server.pid is not None and server.is_alive():
                server.kill()
                server.join(5)

    base_p50 = results[BASELINE].quantile(0.5)
    base_p99 = results[BASELINE].quantile(0.99)
    print(
        f"\n{args.calls} calls per scenario in {args.rounds} rounds, {args.concurrency} in "
        f"flight; service time {args.fast_ms:g} ms, the slow server {args.slow_ms:g} ms; "
        f"{os.cpu_count()} cores shared by client and servers; {elapsed:.0f} s\n"
    )
    base_p90 = results[BASELINE].quantile(0.9)
    print(
        "| scenario | calls | to the slow server | p50 ms | p90 ms | p99 ms "
        "| p50 / base | p90 / base | p99 / base |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, result in results.items():
        n = len(result.latencies)
        p50, p90, p99 = result.quantile(0.5), result.quantile(0.9), result.quantile(0.99)
        name = label if label == BASELINE else f"{label}, 1 of 3 slow"
        print(
            f"| {name} | {n} | {result.slow_hits / max(n, 1):.1%} | {p50:.2f} | {p90:.2f} "
            f"| {p99:.2f} | {p50 / base_p50:.2f}x | {p90 / base_p90:.2f}x | {p99 / base_p99:.2f}x |"
        )
    p2c = results["p2c_ewma"].quantile(0.99) / base_p99
    print(
        f"\np2c_ewma p99 / all-fast p99 = {p2c:.2f}x (goal <= 1.5x: "
        f"{'met' if p2c <= 1.5 else 'missed'}); random: "
        f"{results['random'].quantile(0.99) / base_p99:.2f}x"
    )


if __name__ == "__main__":
    main()
