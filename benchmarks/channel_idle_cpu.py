"""Idle CPU of a BalancedChannel holding 1,000 connected endpoints, sync and asyncio.

    .venv/bin/python benchmarks/channel_idle_cpu.py [--endpoints 1000] [--seconds 10] [--quick]

What the 1,000 endpoints are: one grpc server, in its own process, listens on 0.0.0.0:PORT;
the nodes are 127.0.{1..4}.{1..250}:PORT - 1,000 distinct loopback addresses, so 1,000
sub-channels, each with its own READY TCP connection to that one server (1,000 real listening
ports would measure the kernel, not the client).

For each client the process CPU time (user + system, all threads, via resource.getrusage) is
measured while nothing happens, and printed as % of one core, next to:
  - the same 1,000 plain grpc channels with nobody watching them (grpc core's own idle cost);
  - a thread per plain channel blocked in cygrpc's watch_connectivity_state (it still wakes
    every 0.2 s: cygrpc polls its completion queue in 200 ms steps to check for signals);
  - the prototype's way: Channel.subscribe() on each plain channel (a polling thread each).
The time close() takes (for the prototype: estimated from 20 channels closed in a row) and
the threads left afterwards are printed too. Markdown output.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

from grpc_etcd import BalancedChannel, Node, Snapshot
from grpc_etcd import aio as channel_aio

SERVICE = "bench.idle"


def _serve(port_queue: Any) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    port_queue.put(port)
    server.wait_for_termination()


def _addresses(n: int, port: int) -> list[str]:
    return [f"127.0.{1 + i // 250}.{1 + i % 250}:{port}" for i in range(n)]


def _snapshot(addresses: list[str]) -> Snapshot:
    return Snapshot(
        SERVICE,
        {f"/bench/idle/{i}": Node(SERVICE, str(i), a, "v1") for i, a in enumerate(addresses)},
        1,
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure_sync(seconds: float) -> float:
    cpu, wall = _cpu(), time.monotonic()
    time.sleep(seconds)
    return 100 * (_cpu() - cpu) / (time.monotonic() - wall)


async def _measure_async(seconds: float) -> float:
    cpu, wall = _cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (_cpu() - cpu) / (time.monotonic() - wall)


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _all_ready(states: dict[str, grpc.ChannelConnectivity], n: int) -> bool:
    return len(states) == n and all(s == grpc.ChannelConnectivity.READY for s in states.values())


def bench_plain(addresses: list[str], seconds: float, subscribe: bool) -> dict[str, Any]:
    channels = [grpc.insecure_channel(a) for a in addresses]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=60)
    if subscribe:
        for channel in channels:
            channel.subscribe(lambda state: None, try_to_connect=True)
    time.sleep(1)
    threads = threading.active_count()
    idle = _measure_sync(seconds)
    started = time.monotonic()
    if subscribe:
        # close() waits for the channel's polling thread to come back from its 0.2 s watch:
        # about 0.1 s per channel, so 1,000 in a row take minutes. Time 20, close the rest in
        # parallel, and report the sequential time per channel times the count.
        for channel in channels[:20]:
            channel.close()
        closed = (time.monotonic() - started) / 20 * len(channels)
        with futures.ThreadPoolExecutor(100) as pool:
            list(pool.map(lambda c: c.close(), channels[20:]))
    else:
        for channel in channels:
            channel.close()
        closed = time.monotonic() - started
    return {"cpu": idle, "threads": threads, "close": closed}


def bench_watch_threads(addresses: list[str], seconds: float) -> dict[str, Any]:
    """A thread per channel blocked in cygrpc's watch_connectivity_state (1 s deadlines)."""
    channels = [grpc.insecure_channel(a) for a in addresses]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=60)
    stop = threading.Event()

    def watch(core: Any) -> None:
        state = core.check_connectivity_state(True)
        while not stop.is_set():
            if core.watch_connectivity_state(state, time.time() + 1.0).success:
                state = core.check_connectivity_state(True)

    threading.stack_size(256 * 1024)
    watchers = [threading.Thread(target=watch, args=(c._channel,), daemon=True) for c in channels]
    threading.stack_size(0)
    for thread in watchers:
        thread.start()
    time.sleep(1)
    threads = threading.active_count()
    idle = _measure_sync(seconds)
    started = time.monotonic()
    stop.set()
    for channel in channels:
        channel.close()  # waits for the channel's pending watch to come back
    closed = time.monotonic() - started
    for thread in watchers:
        thread.join()
    return {"cpu": idle, "threads": threads, "close": closed, "left": 0}


def bench_sync(addresses: list[str], seconds: float) -> dict[str, Any]:
    channel = BalancedChannel(SERVICE)
    channel.update(_snapshot(addresses))
    _wait_until(lambda: _all_ready(channel.subchannel_states(), len(addresses)), "READY")
    time.sleep(1)  # let the monitor back off to its idle period
    threads = threading.active_count()
    idle = _measure_sync(seconds)
    started = time.monotonic()
    channel.close()
    closed = time.monotonic() - started
    left = [t.name for t in threading.enumerate() if t.name.startswith("grpc-etcd-channel")]
    return {"cpu": idle, "threads": threads, "close": closed, "left": len(left)}


async def _bench_aio(addresses: list[str], seconds: float) -> dict[str, Any]:
    channel = channel_aio.BalancedChannel(SERVICE)
    channel.update(_snapshot(addresses))
    deadline = time.monotonic() + 120
    while not _all_ready(channel.subchannel_states(), len(addresses)):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for READY")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    threads = threading.active_count()
    idle = await _measure_async(seconds)
    started = time.monotonic()
    await channel.close()
    closed = time.monotonic() - started
    left = sum(not t.done() for t in asyncio.all_tasks()) - 1  # minus this one
    return {"cpu": idle, "threads": threads, "close": closed, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="idle window per client")
    parser.add_argument("--quick", action="store_true", help="3 s windows")
    parser.add_argument(
        "--no-subscribe", action="store_true", help="skip the Channel.subscribe() comparison"
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    addresses = _addresses(args.endpoints, ports.get(timeout=30))

    rows: list[tuple[str, dict[str, Any]]] = []
    rows.append(
        (
            "plain grpc channels, unwatched (grpc core's own cost)",
            bench_plain(addresses, seconds, subscribe=False),
        )
    )
    rows.append(("sync BalancedChannel (one monitor thread)", bench_sync(addresses, seconds)))
    rows.append(
        (
            "aio BalancedChannel (a task per sub-channel)",
            asyncio.run(_bench_aio(addresses, seconds)),
        )
    )
    rows.append(
        (
            "plain channels + a thread each in watch_connectivity_state",
            bench_watch_threads(addresses, seconds),
        )
    )
    if not args.no_subscribe:
        rows.append(
            (
                "plain channels + Channel.subscribe() each (the prototype)",
                bench_plain(addresses, seconds, subscribe=True),
            )
        )
    server.kill()

    print(
        f"\nIdle CPU with {args.endpoints} READY endpoints, {seconds:.0f} s windows "
        f"(% of one core, whole client process)\n"
    )
    print("| client | idle CPU | threads while idle | close() | left after close |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows:
        left = row.get("left", "-")
        print(
            f"| {name} | {row['cpu']:.2f}% | {row['threads']} | {row['close'] * 1000:.0f} ms "
            f"| {left} |"
        )


if __name__ == "__main__":
    main()
