"""Pick cost in ns at 3, 100 and 10,000 nodes: our version picker vs the seed's scan under a lock.

    .venv/bin/python benchmarks/pick_cost.py [--rounds 7] [--quick]

The seed's picker (Go original, re-created in Python for a fair same-language comparison)
locks, scans every node, keeps those of the wanted version and picks one at random. Ours is
built once per change and picks with two dict lookups and a random index. Half of the nodes
are v1, half v2; every pick asks for v1. Medians over several rounds, printed as markdown.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import timeit
from collections.abc import Callable, Sequence

from grpc_etcd.node import Node
from grpc_etcd.policies import ConnState, Endpoint, VersionPolicy
from grpc_etcd.routing import CallInfo


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


def endpoints(n: int) -> list[Endpoint[str]]:
    return [
        Endpoint(
            Node("s", f"n{i}", f"127.0.0.1:{1000 + i}", "v1" if i % 2 == 0 else "v2"),
            f"sub{i}",
            ConnState.READY,
        )
        for i in range(n)
    ]


def ns_per_call(fn: Callable[[], object], budget: float = 0.2) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * budget / 0.2))
    return min(timer.repeat(repeat=3, number=number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 100, 10_000])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = min(3, args.rounds) if args.quick else args.rounds
    call = CallInfo("/proto.Api/ApiTest", version="v1")
    print("| nodes | ours (ns/pick) | seed-style scan+lock (ns/pick) | speed-up |")
    print("|---:|---:|---:|---:|")
    for n in args.sizes:
        eps = endpoints(n)
        ours = VersionPolicy().build(eps)
        seed = SeedStylePicker(eps)
        ours_ns, seed_ns = [], []
        for _ in range(rounds):  # alternate so both see the same machine noise
            ours_ns.append(ns_per_call(lambda p=ours: p.pick(call)))  # type: ignore[misc]
            budget = 0.05 if n > 1000 else 0.2
            seed_ns.append(ns_per_call(lambda p=seed: p.pick(call), budget))  # type: ignore[misc]
        o, s = statistics.median(ours_ns), statistics.median(seed_ns)
        print(f"| {n:,} | {o:,.0f} | {s:,.0f} | {s / o:,.1f}x |")


if __name__ == "__main__":
    main()
