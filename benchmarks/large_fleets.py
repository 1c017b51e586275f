"""Locality, slow start and the panic threshold, against their goals (issue 14).

    .venv/bin/python benchmarks/large_fleets.py [--picks 20000] [--seed 1] [--live-rounds 5]

A simulation of the pure code the channels run (``Balancer`` and ``policies/_fleet.py``, the
policies' own pickers, slow start's clock passed in, the callers' view as client keys give it),
with no sockets, and one live part:

* ``prefer_local``: the share of calls kept in the caller's zone as its usable nodes drop,
  against Envoy's priority load with overprovisioning 1.4 (goal: 100 % while >= 72 % of the
  local nodes are usable, ~47 % with 1 of 3, 0 with none).
* ``zone_aware``: each caller zone's local share against Envoy's local / residual shares, and
  how evenly the fleet's calls land on the nodes (goal: within +-5 points).
* slow start: a new node's share among four through its window, against
  ``weight x max(minWeightPercent, (t / window) ^ (1 / aggression))`` (goal: +-5 points).
* panic: with 3 of 10 nodes usable and 4 more READY but unhealthy, where the calls go below
  and above the threshold (goal: over every READY node below it).
* live (``--live-rounds``, 0 skips it): six real grpc servers, three in the caller's zone; a
  sync ``BalancedChannel`` with ``prefer_local``; the time from stopping the last local server
  to 20 calls in a row answered in the other zone (goal: within 1 s).

Shares are measured over ``--picks`` picks with a fixed ``--seed``, so a run repeats exactly.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import Counter
from concurrent import futures
from dataclasses import replace
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's GOAWAY notes when a server stops

import grpc

from grpc_etcd import BalancedChannel, Node, Snapshot
from grpc_etcd.clients import Client, ClientView
from grpc_etcd.config import parse_config
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.policies import Balancer, ConnState, DoneInfo, Endpoint, Picker, get_policy
from grpc_etcd.policies._fleet import prefer_local_share
from grpc_etcd.routing import CallInfo

CALL = CallInfo("/proto.Api/ApiTest")
OK = DoneInfo("OK", 0.001)
FAILING = ConnState.TRANSIENT_FAILURE


_PORTS: dict[str, int] = {}


def endpoint(
    name: str, state: ConnState = ConnState.READY, *, serving: bool = True, **labels: str
) -> Endpoint[str]:
    """An endpoint whose sub-channel is its name (picks read as names), at an address of its
    own."""
    port = _PORTS.setdefault(name, 20000 + len(_PORTS))
    node = Node("s", name, f"127.0.0.1:{port}", "v1", labels, key=f"/s/{name}")
    return Endpoint(node, name, state, serving=serving)


def shares(picker: Picker[str], picks: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        pick = picker.pick(CALL)
        counts[pick.subchannel] += 1
        if pick.done is not None:
            pick.done(OK)
    return counts


def share_of(counts: Counter[str], prefix: str) -> float:
    return sum(n for name, n in counts.items() if name.startswith(prefix)) / sum(counts.values())


# ---------------------------------------------------------------- prefer_local


def prefer_local(picks: int) -> None:
    print("\n### prefer_local: calls kept in the caller's zone a (round_robin)\n")
    print("| zone a (usable / registered) | zone b usable | kept in a | Envoy | diff (points) |")
    print("|---|---:|---:|---:|---:|")
    config = parse_config(
        {
            "locality": {"mode": "prefer_local", "minClusterSize": 6},
            "loadBalancingConfig": [{"round_robin": {}}],
        }
    )
    cases = [(25, 25), (18, 25), (17, 25), (2, 3), (1, 3), (0, 3)]
    for usable, registered in cases:
        local = [
            endpoint(f"a{i}", ConnState.READY if i < usable else FAILING, zone="a")
            for i in range(registered)
        ]
        remote = [endpoint(f"b{i}", zone="b") for i in range(registered)]
        picker = Balancer[str](config, zone="a").build(local + remote)
        kept = share_of(shares(picker, picks), "a")
        expected = prefer_local_share(usable, registered, registered, registered)
        print(
            f"| {usable} / {registered} ({usable / registered:.0%}) | {registered} | {kept:.1%} "
            f"| {expected:.1%} | {100 * (kept - expected):+.1f} |"
        )


# ---------------------------------------------------------------- zone_aware


def zone_aware(picks: int) -> None:
    print("\n### zone_aware: local share per caller zone, and the load per node\n")
    print(
        "| callers per zone | nodes per zone | caller zone | kept local | Envoy "
        "| diff (points) | node load max / min vs mean |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    config = parse_config({"locality": {"mode": "zone_aware", "minClusterSize": 1}})
    scenarios = [
        ({"a": 2, "b": 1}, {"a": 1, "b": 2}),  # the issue's example
        ({"a": 4, "b": 4, "c": 2}, {"a": 1, "b": 2, "c": 1}),  # Envoy's comment
        ({"a": 1, "b": 1, "c": 1}, {"a": 2, "b": 3, "c": 5}),
        ({"a": 5, "b": 3, "c": 2}, {"a": 3, "b": 3, "c": 4}),
    ]
    for callers, nodes_per_zone in scenarios:
        nodes = [
            endpoint(f"{zone}{i}", zone=zone)
            for zone, n in nodes_per_zone.items()
            for i in range(n * 2)
        ]
        upstream = {zone: n * 2 for zone, n in nodes_per_zone.items()}
        total_callers = sum(callers.values())
        fleet: Counter[str] = Counter()
        rows = []
        for zone, count in callers.items():
            balancer = Balancer[str](config, source={"zone": zone})
            balancer.update_clients(_view(zone, callers))
            counts = shares(balancer.build(nodes), picks)
            for name, n in counts.items():
                fleet[name] += n * count  # each of the zone's callers makes the same calls
            kept = share_of(counts, zone)
            local_nodes = upstream[zone] / sum(upstream.values())
            expected = min(1.0, local_nodes / (count / total_callers))
            rows.append((zone, kept, expected))
        mean = sum(fleet.values()) / len(nodes)
        spread = f"{max(fleet.values()) / mean:.3f} / {min(fleet.values()) / mean:.3f}"
        for zone, kept, expected in rows:
            print(
                f"| {_counts(callers)} | {_counts(nodes_per_zone, 2)} | {zone} | {kept:.1%} "
                f"| {expected:.1%} | {100 * (kept - expected):+.1f} | {spread} |"
            )


def _view(zone: str, callers: dict[str, int]) -> ClientView:
    """The view of a channel in ``zone`` among ``callers`` channels per zone, as client keys
    give it."""
    clients = [
        Client(f"{name}{i}", {"zone": name}) for name, n in callers.items() for i in range(n)
    ]
    own = next(c for c in clients if c.labels["zone"] == zone)
    return ClientView(own, tuple(clients), revision=1)


def _counts(per_zone: dict[str, int], scale: int = 1) -> str:
    return " ".join(f"{zone}:{n * scale}" for zone, n in per_zone.items())


# ---------------------------------------------------------------- slow start


def slow_start(picks: int) -> None:
    print("\n### slow start: a new node's share among four (3 warm), window 30 s\n")
    print("| policy | aggression | t (s) | factor | new node's share | formula | diff (points) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name in ("random", "round_robin", "weighted_round_robin", "least_request"):
        for aggression in (1.0, 2.0):
            settings = {
                "slowStartConfig": {
                    "slowStartWindow": "30s",
                    "aggression": aggression,
                    "minWeightPercent": 10,
                }
            }
            clock = [0.0]
            policy = get_policy(name, settings)
            policy._clock = lambda c=clock: c[0]  # type: ignore[attr-defined]
            warm = [replace(endpoint(f"w{i}"), ready_since=-1000.0) for i in range(3)]
            fleet = [*warm, replace(endpoint("new"), ready_since=0.0)]
            for t in (0.0, 3.0, 7.5, 15.0, 22.5, 29.0):
                clock[0] = t
                factor = max(0.1, (t / 30) ** (1 / aggression))
                expected = factor / (3 + factor)
                measured = share_of(shares(policy.build(fleet), picks), "new")
                worst = max(worst, abs(measured - expected))
                print(
                    f"| {name} | {aggression:g} | {t:g} | {factor:.3f} | {measured:.1%} "
                    f"| {expected:.1%} | {100 * (measured - expected):+.1f} |"
                )
    print(f"\nLargest difference: {100 * worst:.1f} points.")


# ---------------------------------------------------------------- panic


def panic(picks: int) -> None:
    print("\n### panic threshold: 10 nodes, 3 usable, 4 READY but unhealthy, 3 failing\n")
    print("| panicThreshold | nodes that get calls | share on the 3 usable | share per node |")
    print("|---:|---|---:|---|")
    fleet = [
        *[endpoint(f"u{i}") for i in range(3)],
        *[endpoint(f"h{i}", serving=False) for i in range(2)],
        *[replace(endpoint(f"e{i}"), ejected=True) for i in range(2)],
        *[endpoint(f"f{i}", FAILING) for i in range(3)],
    ]
    for threshold in (0, 25, 50, 100):
        config = parse_config(
            {"panicThreshold": threshold, "loadBalancingConfig": [{"round_robin": {}}]}
        )
        counts = shares(Balancer[str](config).build(fleet), picks)
        per_node = " ".join(f"{n}:{c / picks:.0%}" for n, c in sorted(counts.items()))
        print(f"| {threshold} | {len(counts)} | {share_of(counts, 'u'):.0%} | {per_node} |")


# ---------------------------------------------------------------- live


class _Named(api_pb2_grpc.ApiServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    def ApiTest(self, request: Any, context: grpc.ServicerContext) -> Any:
        return api_pb2.Response(output=self.name)


def _server(name: str) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_ApiServicer_to_server(_Named(name), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


#: A retry policy whose backoff outlasts the time the channel takes to see a server go.
RETRY = {
    "name": [{}],
    "retryPolicy": {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    },
}


def live(rounds: int) -> None:
    print("\n### prefer_local, live: the last local server stops -> every call in zone b\n")
    print("| config | rounds | time to 20 calls in a row in zone b: median / max | calls failed |")
    print("|---|---:|---:|---:|")
    base = {
        "locality": {"mode": "prefer_local", "minClusterSize": 6},
        "loadBalancingConfig": [{"round_robin": {}}],
    }
    for what, config in (
        ("no retry policy", base),
        ("retryPolicy, 50 ms backoff", {**base, "methodConfig": [RETRY]}),
    ):
        took, errors = _failovers(config, rounds)
        print(
            f"| {what} | {rounds} | {statistics.median(took) * 1000:.0f} / "
            f"{max(took) * 1000:.0f} ms | {errors} |"
        )


def _failovers(config: dict[str, Any], rounds: int) -> tuple[list[float], int]:
    took: list[float] = []
    errors = 0
    for _ in range(rounds):
        servers = {f"{z}{i}": _server(f"{z}{i}") for z in "ab" for i in range(3)}
        nodes = {
            f"/s/{name}": Node("bench.zones", name, address, "v1", {"zone": name[0]})
            for name, (_, address) in servers.items()
        }
        with BalancedChannel("bench.zones", config=config, source={"zone": "a"}) as channel:
            channel.update(Snapshot("bench.zones", nodes, 1))
            call = channel.unary_unary(
                "/proto.Api/ApiTest",
                request_serializer=api_pb2.Request.SerializeToString,
                response_deserializer=api_pb2.Response.FromString,
            )
            while len({call(api_pb2.Request(), timeout=5).output for _ in range(30)}) < 3:
                pass  # until the three local servers answer
            for name in ("a1", "a2"):
                servers[name][0].stop(None)
            began = time.monotonic()
            servers["a0"][0].stop(None)
            streak = 0
            while streak < 20 and time.monotonic() - began < 10:
                try:
                    answer = call(api_pb2.Request(), timeout=5).output
                    streak = streak + 1 if answer[0] == "b" else 0
                except grpc.RpcError:
                    errors += 1
                    streak = 0
            took.append(time.monotonic() - began)
        for server, _ in servers.values():
            server.stop(None)
    return took, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--live-rounds", type=int, default=5)
    args = parser.parse_args()
    random.seed(args.seed)
    prefer_local(args.picks)
    zone_aware(args.picks)
    slow_start(args.picks)
    panic(args.picks)
    if args.live_rounds:
        live(args.live_rounds)


if __name__ == "__main__":
    main()
