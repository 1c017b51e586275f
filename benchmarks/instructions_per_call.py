"""Instructions per unary call, BalancedChannel minus plain grpcio, counted by callgrind.

    .venv/bin/python benchmarks/instructions_per_call.py [--calls 1000] [--rounds 3]
        [--twin sync|aio|both] [--keep DIR]

``cpu_per_call.py`` measures CPU time, which on a small shared machine moves by tens of µs
between runs; this counts the client's instructions instead, which repeat to a fraction of a
percent, so a change of 1 µs a call shows. Same server, rows and metadata as
``cpu_per_call.py``: a plain ``grpc.insecure_channel`` (``grpc.aio`` for the asyncio twin)
sending ``x-version: v1`` itself, and BalancedChannels with ``version="v1"`` holding that one
node, for each config (round_robin; retry + throttling + outlier detection; hedging answered
before hedgingDelay).

The script starts the server in a process of its own, then runs itself again under
``valgrind --tool=callgrind`` as the client (every thread of it counted; the server is not).
Around each block of ``--calls`` sequential calls it zeroes callgrind's counters and dumps
them (client requests, through a ten-line C helper built with ``cc`` into a temporary
directory), so each block's count is its own. Blocks of every channel take turns in
``--rounds`` rounds; a row is the median over rounds of instructions per call, and of ours
minus the plain channel's of the same round. ``--keep DIR`` keeps the dumps
(``callgrind_annotate DIR/cg.out.<pid>.<n>``) to see where a block's instructions went.
Needs valgrind and a C compiler; it takes a few minutes (the client runs ~50x slower).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
int cg_running(void) { return RUNNING_ON_VALGRIND; }
"""
_LABEL = re.compile(r"^desc: Trigger: Client Request: (.+)$", re.M)
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)", re.M)


def _build_helper(directory: Path) -> Path:
    source = directory / "cg.c"
    source.write_text(_HELPER)
    library = directory / "libcg.so"
    subprocess.run(
        ["cc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
        check=True,
    )
    return library


# ------------------------------------------------------------------ the client (under callgrind)


class _Counter:
    """Zero callgrind's counters before a block, dump them (labelled) after it."""

    def __init__(self, library: str) -> None:
        self._lib = ctypes.CDLL(library)
        self._lib.cg_dump.argtypes = [ctypes.c_char_p]
        if not self._lib.cg_running():
            raise SystemExit("the client must run under valgrind --tool=callgrind")

    def zero(self) -> None:
        self._lib.cg_zero()

    def dump(self, label: str) -> None:
        self._lib.cg_dump(label.encode())


def _client(address: str, library: str, twin: str, calls: int, rounds: int) -> None:
    # Imported here: the parent process needs none of it.
    import grpc
    import grpc.aio
    from channel_throughput import VERSION, _ready, _snapshot
    from cpu_per_call import REQUEST, ROWS, SERVICE

    from grpc_etcd import BalancedChannel
    from grpc_etcd import aio as channel_aio
    from grpc_etcd.demo import api_pb2_grpc

    counter = _Counter(library)

    if twin in ("sync", "both"):
        channels: dict[str, tuple[Any, Any]] = {"plain": (grpc.insecure_channel(address), VERSION)}
        grpc.channel_ready_future(channels["plain"][0]).result(timeout=60)
        for label, config in ROWS:
            balanced = BalancedChannel(SERVICE, version="v1", config=config)
            balanced.update(_snapshot([address]))
            channels[label] = (_ready(balanced, 1), None)
        stubs = {name: (api_pb2_grpc.ApiStub(c).ApiTest, m) for name, (c, m) in channels.items()}
        for number in range(-1, rounds):  # round -1 warms up (threads starting, caches)
            for name, (call, metadata) in stubs.items():
                counter.zero()
                for _ in range(calls):
                    call(REQUEST, metadata=metadata, timeout=10)
                counter.dump(f"sync|{name}|{number}")
        for channel, _ in channels.values():
            channel.close()

    async def run_aio() -> None:
        channels: dict[str, tuple[Any, Any]] = {
            "plain": (grpc.aio.insecure_channel(address), VERSION)
        }
        for label, config in ROWS:
            balanced = channel_aio.BalancedChannel(SERVICE, version="v1", config=config)
            balanced.update(_snapshot([address]))
            channels[label] = (balanced, None)
        for channel, _ in channels.values():
            await channel.channel_ready()
        stubs = {name: (api_pb2_grpc.ApiStub(c).ApiTest, m) for name, (c, m) in channels.items()}
        for number in range(-1, rounds):
            for name, (call, metadata) in stubs.items():
                counter.zero()
                for _ in range(calls):
                    await call(REQUEST, metadata=metadata, timeout=10)
                counter.dump(f"asyncio|{name}|{number}")
        for channel, _ in channels.values():
            await channel.close()

    if twin in ("aio", "both"):
        asyncio.run(run_aio())


# ------------------------------------------------------------------ the parent


def _read(directory: Path) -> dict[tuple[str, str], list[int]]:
    """Per (twin, channel), the instruction count of each round's block."""
    counts: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for dump in directory.glob("cg.out.*"):
        text = dump.read_text(errors="replace")
        label, totals = _LABEL.search(text), _TOTALS.search(text)
        if label is None or totals is None or label.group(1).count("|") != 2:
            continue
        twin, name, number = label.group(1).split("|")
        if int(number) >= 0:
            counts.setdefault((twin, name), []).append((int(number), int(totals.group(1))))
    return {key: [n for _, n in sorted(rounds)] for key, rounds in counts.items()}


def _table(counts: dict[tuple[str, str], list[int]], calls: int) -> list[str]:
    lines = [
        "| client | config | instructions/call (median) | ours - plain (median) "
        "| min .. max over rounds |",
        "|---|---|---:|---:|---:|",
    ]
    for twin in ("sync", "asyncio"):
        plain = counts.get((twin, "plain"))
        if plain is None:
            continue
        per_call = [n / calls for n in plain]
        lines.append(f"| {twin} | plain grpcio | {statistics.median(per_call):,.0f} | - | - |")
        for (row_twin, name), ours in counts.items():
            if row_twin != twin or name == "plain":
                continue
            extra = [(o - p) / calls for o, p in zip(ours, plain, strict=True)]
            median = statistics.median(n / calls for n in ours)
            lines.append(
                f"| {twin} | {name} | {median:,.0f} | **{statistics.median(extra):+,.0f}** "
                f"| {min(extra):+,.0f} .. {max(extra):+,.0f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--twin", choices=("sync", "aio", "both"), default="both")
    parser.add_argument("--keep", type=Path, help="keep callgrind's dumps in this directory")
    parser.add_argument("--client", nargs=2, metavar=("ADDRESS", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client(*args.client, args.twin, args.calls, args.rounds)
        return
    for tool in ("valgrind", "cc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"instructions_per_call.py needs {tool} on the PATH")

    from channel_throughput import _serve

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    address = f"127.0.0.1:{ports.get(timeout=30)}"
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        library = _build_helper(Path(scratch))
        command = [
            "valgrind", "--tool=callgrind", "--quiet",
            f"--callgrind-out-file={directory}/cg.out.%p",
            sys.executable, __file__, "--client", address, str(library),
            "--twin", args.twin, "--calls", str(args.calls), "--rounds", str(args.rounds),
        ]  # fmt: skip
        try:
            subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        finally:
            server.kill()
        counts = _read(directory)
    print(
        f"\n{args.rounds} rounds of {args.calls:,} sequential unary calls per channel; "
        f"client instructions (callgrind, every thread) per call; server in its own process\n"
    )
    for line in _table(counts, args.calls):
        print(line)


if __name__ == "__main__":
    main()
