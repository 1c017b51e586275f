"""Pick cost per policy at 3, 100 and 10,000 nodes, and the cost of a rebuild after one change.

    .venv/bin/python benchmarks/pick_cost.py [--rounds 5] [--quick] [--sizes 3 100 10000]

Every pick goes through the picker a channel gets from :class:`grpc_etcd.policies.Balancer`
(group choice, then the policy's child picker), so the figures are what a call pays. Half of
the nodes are v1, half v2; the call pins v1 (as the seed's calls do), except the canary row
(no pin, a 90/10 route between v1 and v2). ``least_request`` and ``p2c_ewma`` are timed pick
plus done callback, as a channel runs them; the done callback alone is timed after. The
seed's picker (Go original, re-created in Python for a same-language comparison: a lock, a
scan of every node, a random match) is the last row. The rebuild table times
``Balancer.build`` after one node changed state, the work a PUT/DELETE or a connectivity
change costs the channel. Medians over rounds, as markdown; times are the process's CPU time
(``time.process_time``), so a busy machine inflates them less.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

from grpc_etcd.config import parse_config
from grpc_etcd.node import Node
from grpc_etcd.policies import Balancer, ConnState, DoneInfo, Endpoint, Picker
from grpc_etcd.routing import CallInfo

POLICIES = (
    "random",
    "pick_first",
    "round_robin",
    "weighted_round_robin",
    "least_request",
    "p2c_ewma",
    "ring_hash",
)
CANARY = {
    "routes": [
        {
            "to": [
                {"subset": {"version": "v1"}, "weight": 90},
                {"subset": {"version": "v2"}, "weight": 10},
            ]
        }
    ]
}


SLOW_START = {"slowStartWindow": "3600s"}
LOAD_AWARE = ("least_request", "p2c_ewma")
_OK = DoneInfo("OK", 0.001)


def _pick_and_done(picker: Picker[str], call: CallInfo) -> None:
    done = picker.pick(call).done
    assert done is not None
    done(_OK)


class SeedStylePicker:
    """The Go original's pick: a global lock, a scan of every node, random among matches."""

    def __init__(self, endpoints: Sequence[Endpoint[str]]) -> None:
        self._endpoints = list(endpoints)
        self._lock = threading.Lock()

    def pick(self, call: CallInfo) -> str:
        with self._lock:
            matches = [e.subchannel for e in self._endpoints if e.node.version == call.version]
            if not matches:
                raise LookupError("no match found conn")
            return random.choice(matches)


def endpoints(n: int, weighted: bool = False) -> list[Endpoint[str]]:
    return [
        Endpoint(
            Node(
                "s",
                f"n{i}",
                f"127.0.0.1:{1000 + i}",
                "v1" if i % 2 == 0 else "v2",
                {"weight": str(1 + i % 5)} if weighted else {},
            ),
            f"sub{i}",
            ConnState.READY,
        )
        for i in range(n)
    ]


def ns_per_call(fn: Callable[[], object], budget: float = 0.2) -> float:
    # CPU time of this process, not wall time: on a shared machine the wall clock also counts
    # the time other processes hold the core.
    timer = timeit.Timer(fn, timer=time.process_time)
    number, _ = timer.autorange()
    number = max(1, int(number * budget / 0.2))
    return min(timer.repeat(repeat=3, number=number)) / number * 1e9


def _pickers(n: int) -> list[tuple[str, Callable[[], object]]]:
    eps = endpoints(n)
    pinned = CallInfo("/proto.Api/ApiTest", version="v1")
    hashed = CallInfo("/proto.Api/ApiTest", "v1", {"hash_key": "user-42"})
    rows: list[tuple[str, Callable[[], object]]] = []
    for name in POLICIES:
        picker: Picker[str] = Balancer[str](policy=name).build(eps)
        call = hashed if name == "ring_hash" else pinned
        if name in LOAD_AWARE:
            # Every pick of these counts a call in flight until its done callback: time both,
            # as a channel runs them, so the counts stay those of a real channel.
            rows.append((f"{name} (pick + done)", partial(_pick_and_done, picker, call)))
        else:
            rows.append((name, lambda p=picker, c=call: p.pick(c)))  # type: ignore[misc]
    # Slow start (a window of an hour): the first node READY 1 s ago and the others long
    # before; then every node READY within the last second, a few ms apart (a new channel).
    now = time.monotonic()
    one = [replace(e, ready_since=now - (1 if i == 0 else 7200)) for i, e in enumerate(eps)]
    every = [replace(e, ready_since=now - 1 - i * 0.001) for i, e in enumerate(eps)]
    slow = parse_config({"loadBalancingConfig": [{"round_robin": {"slowStartConfig": SLOW_START}}]})
    for what, warming in (("1 node", one), ("every node", every)):
        picker = Balancer[str](slow).build(warming)
        rows.append((f"round_robin, slow start, {what} warming", lambda p=picker: p.pick(pinned)))  # type: ignore[misc]
    weighted: Picker[str] = Balancer[str](policy="random").build(endpoints(n, weighted=True))
    rows.append(("random, weights 1-5", lambda p=weighted: p.pick(pinned)))  # type: ignore[misc]
    canary: Picker[str] = Balancer[str](parse_config(CANARY)).build(eps)
    unpinned = CallInfo("/proto.Api/ApiTest")
    rows.append(("random, canary route 90/10", lambda p=canary: p.pick(unpinned)))  # type: ignore[misc]
    seed = SeedStylePicker(eps)
    rows.append(("seed-style scan + lock", lambda p=seed: p.pick(pinned)))  # type: ignore[misc]
    return rows


def pick_table(sizes: Sequence[int], rounds: int) -> None:
    results: dict[str, dict[int, float]] = {}
    for n in sizes:
        rows = _pickers(n)
        samples: dict[str, list[float]] = {name: [] for name, _ in rows}
        for _ in range(rounds):  # alternate so every row sees the same machine noise
            for name, fn in rows:
                budget = 0.02 if name.startswith("seed") and n > 1000 else 0.1
                samples[name].append(ns_per_call(fn, budget))
        for name, values in samples.items():
            results.setdefault(name, {})[n] = statistics.median(values)
    print("| policy | " + " | ".join(f"{n:,} nodes (ns/pick)" for n in sizes) + " | largest / 3 |")
    print("|---|" + "---:|" * (len(sizes) + 1))
    for name, by_size in results.items():
        cells = " | ".join(f"{by_size[n]:,.0f}" for n in sizes)
        print(f"| {name} | {cells} | {by_size[sizes[-1]] / by_size[sizes[0]]:,.2f}x |")


def done_cost(rounds: int) -> None:
    info = DoneInfo("OK", 0.001)
    print("\n| done callback | ns/call |\n|---|---:|")
    for name in LOAD_AWARE:
        picker: Picker[str] = Balancer[str](policy=name).build(endpoints(100))
        done = picker.pick(CallInfo("/m", "v1")).done
        assert done is not None
        values = [ns_per_call(lambda d=done: d(info)) for _ in range(rounds)]  # type: ignore[misc]
        print(f"| {name} | {statistics.median(values):,.0f} |")


def rebuild_table(sizes: Sequence[int], rounds: int) -> None:
    print(
        "\n| policy | "
        + " | ".join(f"{n:,} nodes: build after 1 change (ms)" for n in sizes)
        + " |"
    )
    print("|---|" + "---:|" * len(sizes))
    for name in ("random", "round_robin", "least_request", "ring_hash"):
        cells = []
        for n in sizes:
            eps = endpoints(n)
            balancer = Balancer[str](policy=name)
            balancer.build(eps)
            times = []
            for i in range(max(rounds * 4, 20)):
                index = i % n
                state = (
                    ConnState.CONNECTING if eps[index].state is ConnState.READY else ConnState.READY
                )
                eps[index] = replace(eps[index], state=state)
                started = time.process_time()
                balancer.build(eps)
                times.append((time.process_time() - started) * 1e3)
            cells.append(f"{statistics.median(times):,.2f} (p99 {max(times):,.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 100, 10_000])
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args()
    rounds = min(2, args.rounds) if args.quick else args.rounds
    random.seed(1)
    pick_table(args.sizes, rounds)
    done_cost(rounds)
    rebuild_table([3, 1000, *[n for n in args.sizes if n > 1000]], rounds)


if __name__ == "__main__":
    main()
