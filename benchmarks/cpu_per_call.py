"""Client CPU per unary call: BalancedChannel next to a plain grpcio channel, same server.

    .venv/bin/python benchmarks/cpu_per_call.py [--rounds 9] [--calls 2000] [--quick]

One asyncio grpc server answering the demo ``ApiTest`` runs in its own process, so only the
client's work is counted. The client process's CPU time (``time.process_time()``: every
thread, grpc's own included) is read around each block of ``--calls`` sequential unary calls,
one call in flight, on each of:
  - a plain ``grpc.insecure_channel`` (``grpc.aio`` for the asyncio twin) to the server,
    sending ``x-version: v1`` itself;
  - a BalancedChannel with ``version="v1"`` (it adds the same metadata) holding that one
    node, with the service config of each row: ``round_robin``; ``round_robin`` with a retry
    policy, retry throttling and outlier detection; ``round_robin`` with a hedging policy whose
    ``hedgingDelay`` (0.5 s) is far above a call's latency, so the first attempt answers.
``--rounds`` rounds, each running every channel's ``--calls`` in slices of ``--calls / 10``
that take turns (in an order rotated by one per round), so every channel sees the same machine
noise, also when it drifts within a round. For each row: the median over rounds of the extra
CPU per call over the plain channel of the same round, and of the ratio. Markdown output.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from channel_throughput import VERSION, _ready, _serve, _snapshot

from grpc_etcd import BalancedChannel
from grpc_etcd import aio as channel_aio
from grpc_etcd.config import parse_config
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.errors import ConfigError

SERVICE = "bench.throughput"
ROUND_ROBIN: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
RESILIENT: dict[str, Any] = {
    **ROUND_ROBIN,
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    "outlierDetection": {
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 34,
        "consecutiveErrors": 5,
    },
}
HEDGING: dict[str, Any] = {
    **ROUND_ROBIN,
    "methodConfig": [
        {
            "name": [{}],
            "hedgingPolicy": {
                "maxAttempts": 2,
                "hedgingDelay": "0.5s",
                "nonFatalStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
ROWS = (
    ("round_robin", ROUND_ROBIN),
    ("retry + throttling + outlier detection", RESILIENT),
    ("hedging (first answer before hedgingDelay)", HEDGING),
)
REQUEST = api_pb2.Request(input="x")
#: Slices per round: each channel's calls of a round are made in this many turns.
SLICES = 10


def _usable(rows: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[str]]:
    """The rows whose config parses, and a note for each that does not."""
    usable, notes = [], []
    for label, config in rows:
        try:
            parse_config(config)
        except ConfigError as exc:
            notes.append(f"{label}: not run, {str(exc).splitlines()[0]}")
            continue
        usable.append((label, config))
    return usable, notes


def _order(names: list[str], round_number: int) -> list[str]:
    shift = round_number % len(names)
    return names[shift:] + names[:shift]


# ------------------------------------------------------------------ sync


def _sync_block(stub: Any, metadata: Any, calls: int) -> float:
    """CPU µs per call of ``calls`` sequential calls."""
    call = stub.ApiTest
    started = time.process_time()
    for _ in range(calls):
        call(REQUEST, metadata=metadata, timeout=10)
    return (time.process_time() - started) / calls * 1e6


def run_sync(address: str, rows: list[Any], rounds: int, calls: int) -> dict[str, list[float]]:
    plain = grpc.insecure_channel(address)
    grpc.channel_ready_future(plain).result(timeout=30)
    channels: dict[str, tuple[Any, Any]] = {"plain": (plain, VERSION)}
    for label, config in rows:
        balanced = BalancedChannel(SERVICE, version="v1", config=config)
        balanced.update(_snapshot([address]))
        channels[label] = (_ready(balanced, 1), None)
    stubs = {name: (api_pb2_grpc.ApiStub(ch), md) for name, (ch, md) in channels.items()}
    for stub, metadata in stubs.values():
        _sync_block(stub, metadata, max(100, calls // 10))  # warm up
    samples: dict[str, list[float]] = {name: [] for name in stubs}
    for number in range(rounds):
        spent = dict.fromkeys(stubs, 0.0)
        for _ in range(SLICES):
            for name in _order(list(stubs), number):
                spent[name] += _sync_block(*stubs[name], calls // SLICES)
        for name, total in spent.items():
            samples[name].append(total / SLICES)
    for channel, _ in channels.values():
        channel.close()
    return samples


# ------------------------------------------------------------------ asyncio


async def _aio_block(stub: Any, metadata: Any, calls: int) -> float:
    call = stub.ApiTest
    started = time.process_time()
    for _ in range(calls):
        await call(REQUEST, metadata=metadata, timeout=10)
    return (time.process_time() - started) / calls * 1e6


async def _run_aio(
    address: str, rows: list[Any], rounds: int, calls: int
) -> dict[str, list[float]]:
    channels: dict[str, tuple[Any, Any]] = {"plain": (grpc.aio.insecure_channel(address), VERSION)}
    for label, config in rows:
        balanced = channel_aio.BalancedChannel(SERVICE, version="v1", config=config)
        balanced.update(_snapshot([address]))
        channels[label] = (balanced, None)
    for channel, _ in channels.values():
        await channel.channel_ready()
    stubs = {name: (api_pb2_grpc.ApiStub(ch), md) for name, (ch, md) in channels.items()}
    for stub, metadata in stubs.values():
        await _aio_block(stub, metadata, max(100, calls // 10))
    samples: dict[str, list[float]] = {name: [] for name in stubs}
    for number in range(rounds):
        spent = dict.fromkeys(stubs, 0.0)
        for _ in range(SLICES):
            for name in _order(list(stubs), number):
                spent[name] += await _aio_block(*stubs[name], calls // SLICES)
        for name, total in spent.items():
            samples[name].append(total / SLICES)
    for channel, _ in channels.values():
        await channel.close()
    return samples


def run_aio(address: str, rows: list[Any], rounds: int, calls: int) -> dict[str, list[float]]:
    return asyncio.run(_run_aio(address, rows, rounds, calls))


# ------------------------------------------------------------------ report


def _table(twin: str, samples: dict[str, list[float]]) -> list[str]:
    plain = samples.pop("plain")
    lines = [
        f"| {twin}: plain grpcio | - | {statistics.median(plain):.1f} | - | - | 1.00x |",
    ]
    for label, ours in samples.items():
        extra = [o - p for o, p in zip(ours, plain, strict=True)]
        ratio = [o / p for o, p in zip(ours, plain, strict=True)]
        lines.append(
            f"| {twin}: BalancedChannel | {label} | {statistics.median(ours):.1f} "
            f"| **{statistics.median(extra):+.1f}** | {min(extra):+.1f} .. {max(extra):+.1f} "
            f"| {statistics.median(ratio):.3f}x |"
        )
    return lines


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000, help="calls per channel per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 500 calls")
    args = parser.parse_args()
    rounds, calls = (3, 500) if args.quick else (args.rounds, args.calls)
    rows, notes = _usable(ROWS)

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    address = f"127.0.0.1:{ports.get(timeout=30)}"
    before = _load()
    try:
        sync = run_sync(address, rows, rounds, calls)
        aio = run_aio(address, rows, rounds, calls)
    finally:
        server.kill()
    print(
        f"\n{rounds} rounds of {calls:,} sequential unary calls per channel, in {SLICES} "
        f"interleaved slices; "
        f"client CPU time (time.process_time, every thread); server in its own process; "
        f"{os.cpu_count()} cores; load average (1/5/15 min) {before} before, {_load()} after\n"
    )
    print("| client | config | CPU µs/call (median) | extra µs/call (median) | extra, min .. max "
          "| ratio (median) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for line in _table("sync", sync) + _table("asyncio", aio):
        print(line)
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
