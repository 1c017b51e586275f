"""Subsetting at fleet sizes: connections per node and churn, simulated and against real etcd.

    .venv/bin/python benchmarks/fleet.py [--quick] [--events 10] [--seed 1] [--no-live]

**Simulation.** The assignment code itself - the same ``subset()`` of the policies a channel
runs, fed a ``ClientView`` - at 300 clients x 300 nodes x subsets of 25, 1,000 x 100 x 25 and
100 x 100 x 25, next to the schemes of other libraries, re-created here from their sources:

- go-zero (``zrpc/resolver/internal``): 32 nodes at random, the list re-shuffled on every
  update of the nodes;
- Kratos (``internal/subset``): a consistent-hash ring of 160 points per node (FNV-32a), each
  client taking 25 distinct nodes clockwise from the hash of a random key of its own;
- gRFC A68 ``random_subsetting`` (ours: rendezvous hashing with a per-channel salt);
- Google's deterministic subsetting as the SRE book gives it (rounds of ``N / k`` clients each
  shuffling the list with the round number as seed), with the client index taken as the rank
  among client keys (etcd gives no contiguous task numbers);
- ``deterministic_subsetting`` (ours).

Node addresses are random ``10.x.y.z:port``, client ids random UUIDs. For each scheme:
connections per node (max / mean and min / mean over the nodes), and churn: how many members
of each existing client's subset change (new members) when one node joins, one node leaves,
one client joins, one client leaves - the mean over clients (averaged over ``--events``
random events) and the worst client seen.

**Zones.** Three zones, one subnet each (so address order groups the nodes by zone), callers
and nodes spread over them evenly or not: ``deterministic_subsetting`` without a locality
(consecutive slices of the address ring), with one (``locality`` set: slices of a ring that
interleaves the zones, ranked among the callers of one's own zone), and A68. Printed per
scheme: connections per node; callers whose subset holds no node of their own zone
(``prefer_local`` cannot keep their calls local) and the fewest local nodes in a subset; with
``prefer_local``, each zone's calls spread over its nodes (each caller's calls evenly over the
local nodes of its subset): the worst zone's max / mean and min / mean; with ``zone_aware``,
how far the local share a caller computes from its subset is from the one the whole group
gives (percentage points, mean and worst); and churn as above, events drawn by the zones'
shares.

**Live run.** 60 ``grpc_etcd.aio`` channels x 40 registered nodes x subsets of 8, in one
process against a throwaway etcd (``grpc_etcd.testing.EtcdServer``) and one grpc server
listening on 40 loopback ports: the same figures read from each channel's
``subchannel_states()`` after each event has reached every channel; then the same with the
nodes and channels in three zones and a locality configured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grpc_etcd.clients import Client, ClientView
from grpc_etcd.policies import DeterministicSubsettingPolicy, RandomSubsettingPolicy
from grpc_etcd.policies._fleet import zone_aware_shares
from grpc_etcd.policies._subsetting import Zones, take

ROWS = ((300, 300, 25), (1000, 100, 25), (100, 100, 25))
GO_ZERO_SIZE = 32  # go-zero's subsetSize constant
KRATOS_POINTS = 160  # points per node on Kratos' ring
EVENTS = ("node joins", "node leaves", "client joins", "client leaves")


# ------------------------------------------------------------------ the schemes

Subsets = dict[str, set[str]]  # client id -> its subset


class Scheme:
    """One way to give each client a subset; state per client survives events."""

    name = ""
    #: Whether a client's subset is recomputed when only the other clients change.
    follows_clients = False

    def __init__(self, size: int, rnd: random.Random) -> None:
        self.size = size
        self.rnd = rnd

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        """Every client's subset after an update (``old``: the subsets before it)."""
        raise NotImplementedError


class Deterministic(Scheme):
    name = "deterministic_subsetting (ours)"
    follows_clients = True

    def __init__(self, size: int, rnd: random.Random) -> None:
        super().__init__(size, rnd)
        self.policy = DeterministicSubsettingPolicy({"subsetSize": size})

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        ring = sorted(nodes)
        everyone = tuple(Client(c) for c in clients)
        return {
            c: set(self.policy.subset(ring, ClientView(Client(c), everyone, 1))) for c in clients
        }


class A68(Scheme):
    name = "A68 random_subsetting (ours)"

    def __init__(self, size: int, rnd: random.Random) -> None:
        super().__init__(size, rnd)
        self.policies: dict[str, RandomSubsettingPolicy] = {}

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        ring = sorted(nodes)
        out = {}
        for c in clients:
            policy = self.policies.get(c)
            if policy is None:
                policy = self.policies[c] = RandomSubsettingPolicy({"subsetSize": self.size})
                policy.salt = self.rnd.randbytes(32)  # the seed's salt, for a repeatable run
            out[c] = set(policy.subset(ring, None))
        return out


class GoZero(Scheme):
    name = f"go-zero ({GO_ZERO_SIZE} at random, reshuffled)"

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        out = {}
        for c in clients:
            if old is not None and c in old and old.get("__nodes__") == set(nodes):
                out[c] = old[c]  # no update of the nodes: go-zero keeps its subset
                continue
            shuffled = list(nodes)
            self.rnd.shuffle(shuffled)
            out[c] = set(shuffled[:GO_ZERO_SIZE])
        out["__nodes__"] = set(nodes)
        return out


def _fnv32a(data: str) -> int:
    h = 0x811C9DC5
    for byte in data.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


class Kratos(Scheme):
    name = "Kratos (ring, 160 points per node)"

    def __init__(self, size: int, rnd: random.Random) -> None:
        super().__init__(size, rnd)
        self.keys: dict[str, str] = {}
        self._ring: tuple[frozenset[str], list[tuple[int, str]]] | None = None

    def _points(self, nodes: Sequence[str]) -> list[tuple[int, str]]:
        key = frozenset(nodes)
        if self._ring is None or self._ring[0] != key:
            points = {_fnv32a(f"{i}{n}"): n for n in nodes for i in range(KRATOS_POINTS)}
            self._ring = (key, sorted(points.items()))
        return self._ring[1]

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        import bisect

        points = self._points(nodes)
        hashes = [h for h, _ in points]
        out = {}
        for c in clients:
            key = self.keys.setdefault(c, str(uuid.UUID(int=self.rnd.getrandbits(128))))
            start = bisect.bisect_right(hashes, _fnv32a(key)) % len(points)
            chosen: list[str] = []
            i = start
            while len(chosen) < min(self.size, len(nodes)):
                node = points[i % len(points)][1]
                if node not in chosen:
                    chosen.append(node)
                i += 1
            out[c] = set(chosen)
        return out


class GoogleSRE(Scheme):
    name = "Google deterministic (SRE book)"
    follows_clients = True

    def assign(self, clients: Sequence[str], nodes: Sequence[str], old: Subsets | None) -> Subsets:
        count = max(len(nodes) // self.size, 1)
        out = {}
        for index, c in enumerate(sorted(clients)):
            backends = sorted(nodes)
            random.Random(index // count).shuffle(backends)
            start = (index % count) * self.size
            out[c] = set(backends[start : start + self.size])
        return out


SCHEMES: tuple[type[Scheme], ...] = (GoZero, Kratos, A68, GoogleSRE, Deterministic)


# ------------------------------------------------------------------ measuring


def balance(subsets: Subsets, nodes: Sequence[str]) -> tuple[float, float]:
    """max / mean and min / mean of the connections per node."""
    per_node = Counter(n for c, s in subsets.items() if c != "__nodes__" for n in s)
    counts = [per_node.get(n, 0) for n in nodes]
    mean = sum(counts) / len(counts)
    return max(counts) / mean, min(counts) / mean


def moved(before: Subsets, after: Subsets) -> list[int]:
    """New members, per client present before and after."""
    return [len(after[c] - before[c]) for c in before if c in after and c != "__nodes__"]


@dataclass
class Row:
    clients: int
    nodes: int
    size: int
    scheme: str
    max_mean: float = 0.0
    min_mean: float = 0.0
    churn: dict[str, list[float]] = field(default_factory=dict)
    worst: dict[str, int] = field(default_factory=dict)


def _address(rnd: random.Random) -> str:
    host = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
    return f"{host}:{rnd.randrange(1024, 65536)}"


def simulate(
    clients: int, nodes: int, size: int, make: type[Scheme], events: int, seed: int
) -> Row:
    rnd = random.Random(seed)
    scheme = make(size, random.Random(seed + 1))
    client_ids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(clients)]
    node_list = sorted({_address(rnd) for _ in range(nodes)})
    while len(node_list) < nodes:
        node_list = sorted({*node_list, _address(rnd)})
    base = scheme.assign(client_ids, node_list, None)
    row = Row(clients, nodes, size, scheme.name)
    row.max_mean, row.min_mean = balance(base, node_list)
    for event in EVENTS:
        means: list[float] = []
        worst = 0
        for _ in range(events):
            c_ids, n_list = list(client_ids), list(node_list)
            if event == "node joins":
                n_list.append(_address(rnd))
            elif event == "node leaves":
                n_list.pop(rnd.randrange(len(n_list)))
            elif event == "client joins":
                c_ids.append(str(uuid.UUID(int=rnd.getrandbits(128))))
            else:
                c_ids.pop(rnd.randrange(len(c_ids)))
            if event.startswith("client") and not scheme.follows_clients:
                after = {c: base[c] for c in c_ids if c in base}  # nothing tells the others
            else:
                after = scheme.assign(c_ids, n_list, base)
            each = moved(base, after)
            means.append(statistics.mean(each))
            worst = max(worst, max(each))
        row.churn[event] = means
        row.worst[event] = worst
    return row


def print_simulation(rows: list[Row]) -> None:
    print("| clients x nodes x subset | scheme | max/mean | min/mean |", end="")
    print("".join(f" {e} |" for e in EVENTS))
    print("|---|---|---:|---:|" + "---:|" * len(EVENTS))
    for row in rows:
        cells = "".join(f" {statistics.mean(row.churn[e]):.2f} ({row.worst[e]}) |" for e in EVENTS)
        print(
            f"| {row.clients} x {row.nodes} x {row.size} | {row.scheme} | "
            f"{row.max_mean:.2f} | {row.min_mean:.2f} |{cells}"
        )
    print()
    print("Churn cells: mean subset members changed per client (the worst client seen).")


# ------------------------------------------------------------------ zones

ZONES = ("a", "b", "c")
#: clients x nodes x subset, the callers' shares of the zones, the nodes'.
ZONE_ROWS = (
    (300, 300, 25, (1 / 3, 1 / 3, 1 / 3), (1 / 3, 1 / 3, 1 / 3)),
    (300, 300, 25, (0.6, 0.3, 0.1), (0.2, 0.3, 0.5)),
    (1000, 100, 25, (0.5, 0.25, 0.25), (0.1, 0.45, 0.45)),
)
ZONE_SCHEMES = (
    "deterministic_subsetting, no locality",
    "deterministic_subsetting + locality (ours)",
    "A68 random_subsetting",
)


@dataclass
class ZoneRow:
    clients: int
    nodes: int
    size: int
    shares: str
    scheme: str
    max_mean: float = 0.0
    min_mean: float = 0.0
    no_local: float = 0.0
    fewest_local: int = 0
    local_max: float = 0.0
    local_min: float = 0.0
    aware_mean: float = 0.0
    aware_worst: float = 0.0
    aware_fleet: float = 0.0
    sizes: tuple[int, int] = (0, 0)
    churn: dict[str, float] = field(default_factory=dict)
    worst: dict[str, int] = field(default_factory=dict)


class _ZoneFleet:
    """Callers (id -> zone) and nodes (address -> zone), and each scheme's subsets of them."""

    def __init__(self, scheme: str, size: int, rnd: random.Random) -> None:
        self.scheme = scheme
        self.size = size
        self.rnd = rnd
        self.policy = DeterministicSubsettingPolicy({"subsetSize": size})
        self.salts: dict[str, RandomSubsettingPolicy] = {}

    def assign(self, callers: dict[str, str], nodes: dict[str, str]) -> Subsets:
        ring = sorted(nodes)
        everyone = tuple(Client(c, {"zone": z}) for c, z in callers.items())
        out: Subsets = {}
        for client in everyone:
            zone = client.labels["zone"]
            if self.scheme.startswith("A68"):
                policy = self.salts.get(client.id)
                if policy is None:
                    policy = self.salts[client.id] = RandomSubsettingPolicy(
                        {"subsetSize": self.size}
                    )
                    policy.salt = self.rnd.randbytes(32)
                out[client.id] = set(policy.subset(ring, None))
                continue
            view = ClientView(client, everyone, 1)
            if "no locality" in self.scheme:
                out[client.id] = set(self.policy.subset(ring, view))
            else:
                rings = self.policy.rings(ring, view, Zones("zone", zone, nodes))
                out[client.id] = set(take(rings, ()))
        return out


def _node_address(zone: int, rnd: random.Random) -> str:
    return f"10.{zone}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:{rnd.randrange(1024, 65536)}"


def zone_figures(
    row: ZoneRow, subsets: Subsets, callers: dict[str, str], nodes: dict[str, str]
) -> None:
    """Balance, local nodes, prefer_local's spread and zone_aware's error, into ``row``."""
    row.max_mean, row.min_mean = balance(subsets, list(nodes))
    locals_ = {c: [a for a in subsets[c] if nodes[a] == z] for c, z in callers.items()}
    row.no_local = 100 * sum(1 for held in locals_.values() if not held) / len(callers)
    row.fewest_local = min(len(held) for held in locals_.values())
    load: Counter[str] = Counter()
    for held in locals_.values():
        for address in held:
            load[address] += 1 / len(held)
    worst_max, worst_min = 1.0, 1.0
    for zone in ZONES:
        here = [load.get(a, 0.0) for a, z in nodes.items() if z == zone]
        if here and sum(here):
            mean = statistics.mean(here)
            worst_max, worst_min = (
                max(worst_max, max(here) / mean),
                min(worst_min, min(here) / mean),
            )
    row.local_max, row.local_min = worst_max, worst_min
    spread = Counter(callers.values())
    fleet = Counter(nodes.values())
    errors = []
    by_zone: dict[str, list[float]] = {}
    for client, zone in callers.items():
        whole = zone_aware_shares(zone, spread, fleet)
        # what the picker weighs (_fleet.group_picker): each zone the subset holds, at the
        # group's size (every node usable here)
        held = {nodes[a] for a in subsets[client]}
        mine = zone_aware_shares(zone, spread, {z: fleet[z] for z in held})
        error = 100 * ((mine[0] if mine else 1.0) - (whole[0] if whole else 1.0))
        errors.append(abs(error))
        by_zone.setdefault(zone, []).append(error)
    row.aware_mean, row.aware_worst = statistics.mean(errors), max(errors)
    row.aware_fleet = max(abs(statistics.mean(e)) for e in by_zone.values())
    row.sizes = (min(len(s) for s in subsets.values()), max(len(s) for s in subsets.values()))


def simulate_zones(
    clients: int,
    nodes: int,
    size: int,
    caller_shares: Sequence[float],
    node_shares: Sequence[float],
    scheme: str,
    events: int,
    seed: int,
) -> ZoneRow:
    rnd = random.Random(seed)
    fleet = _ZoneFleet(scheme, size, random.Random(seed + 1))

    def zone() -> int:
        return rnd.choices(range(len(ZONES)), node_shares)[0]

    def caller_zone() -> str:
        return ZONES[rnd.choices(range(len(ZONES)), caller_shares)[0]]

    node_map: dict[str, str] = {}
    for z, share in enumerate(node_shares):
        while sum(1 for v in node_map.values() if v == ZONES[z]) < round(nodes * share):
            node_map[_node_address(z, rnd)] = ZONES[z]
    callers = {
        str(uuid.UUID(int=rnd.getrandbits(128))): ZONES[z]
        for z, share in enumerate(caller_shares)
        for _ in range(round(clients * share))
    }
    shares = "/".join(f"{round(100 * s)}" for s in caller_shares)
    shares += " x " + "/".join(f"{round(100 * s)}" for s in node_shares)
    row = ZoneRow(clients, nodes, size, shares, scheme)
    base = fleet.assign(callers, node_map)
    zone_figures(row, base, callers, node_map)
    follows_clients = scheme.startswith("deterministic")
    for event in EVENTS:
        means: list[float] = []
        worst = 0
        for _ in range(events):
            c_map, n_map = dict(callers), dict(node_map)
            if event == "node joins":
                z = zone()
                n_map[_node_address(z, rnd)] = ZONES[z]
            elif event == "node leaves":
                del n_map[rnd.choice(sorted(n_map))]
            elif event == "client joins":
                c_map[str(uuid.UUID(int=rnd.getrandbits(128)))] = caller_zone()
            else:
                del c_map[rnd.choice(sorted(c_map))]
            if event.startswith("client") and not follows_clients:
                after = {c: base[c] for c in c_map if c in base}
            else:
                after = fleet.assign(c_map, n_map)
            each = moved(base, after)
            means.append(statistics.mean(each))
            worst = max(worst, max(each))
        row.churn[event] = statistics.mean(means)
        row.worst[event] = worst
    return row


def print_zones(rows: list[ZoneRow]) -> None:
    print(
        "| clients x nodes x subset | callers x nodes per zone, % | scheme | max/mean | "
        "min/mean | subset sizes | callers with no local node | fewest local | prefer_local "
        "spread, worst zone | zone_aware error per caller, points: mean (worst) | zone_aware "
        "error of a zone's callers together |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.clients} x {row.nodes} x {row.size} | {row.shares} | {row.scheme} | "
            f"{row.max_mean:.2f} | {row.min_mean:.2f} | {row.sizes[0]}-{row.sizes[1]} | "
            f"{row.no_local:.0f} % | {row.fewest_local} | {row.local_max:.2f} / "
            f"{row.local_min:.2f} | {row.aware_mean:.1f} ({row.aware_worst:.1f}) | "
            f"{row.aware_fleet:.1f} |"
        )
    print()
    print("| clients x nodes x subset | callers x nodes per zone, % | scheme |", end="")
    print("".join(f" {e} |" for e in EVENTS))
    print("|---|---|---|" + "---:|" * len(EVENTS))
    for row in rows:
        cells = "".join(f" {row.churn[e]:.2f} ({row.worst[e]}) |" for e in EVENTS)
        print(f"| {row.clients} x {row.nodes} x {row.size} | {row.shares} | {row.scheme} |{cells}")


# ------------------------------------------------------------------ live, against etcd


async def live(channels: int, nodes: int, size: int, policy: str, zones: bool = False) -> Row:
    import grpc

    import grpc_etcd.aio
    from grpc_etcd.demo import api_pb2_grpc
    from grpc_etcd.demo.server import Api
    from grpc_etcd.testing import EtcdServer

    service = "bench.srv.fleet"
    config: dict[str, Any] = {"loadBalancingConfig": [{policy: {"subsetSize": size}}]}
    if zones:
        config["locality"] = {"key": "zone", "mode": "prefer_local", "minClusterSize": 1}
    server = grpc.aio.server()
    api_pb2_grpc.add_ApiServicer_to_server(Api("any", "127.0.0.1"), server)  # type: ignore[no-untyped-call]
    ports = [server.add_insecure_port("127.0.0.1:0") for _ in range(nodes + 1)]
    await server.start()
    row = Row(channels, nodes, size, f"{policy}{' + locality' if zones else ''} (live)")
    # With zones: a third of the ports each, in address order (one subnet per zone).
    ordered = sorted(f"127.0.0.1:{port}" for port in ports)
    zone_of = {
        a: ZONES[i * len(ZONES) // len(ordered)] if zones else "" for i, a in enumerate(ordered)
    }
    joined = 0

    def channel(registry: Any) -> Any:
        nonlocal joined
        joined += 1
        source = {"zone": ZONES[joined % len(ZONES)]} if zones else None
        return registry.channel(service, config=config, source=source)

    async def register(registry: Any, port: int) -> Any:
        address = f"127.0.0.1:{port}"
        metadata = {"zone": zone_of[address]} if zones else None
        return await registry.register(service, address=address, metadata=metadata)

    try:
        with EtcdServer() as etcd:
            async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
                regs = [await register(registry, port) for port in ports[:nodes]]
                chans = [channel(registry) for _ in range(channels)]

                async def settle(want_nodes: int, want_clients: int) -> dict[Any, set[str]]:
                    deadline = time.monotonic() + 60
                    while True:
                        ready = all(
                            c.snapshot is not None
                            and len(c.snapshot) == want_nodes
                            and (
                                policy != "deterministic_subsetting"
                                or (
                                    c._balancer.clients is not None
                                    and c._balancer.clients.count == want_clients
                                )
                            )
                            for c in chans
                        )
                        if ready:
                            return {c: set(c.subchannel_states()) for c in chans}
                        if time.monotonic() > deadline:
                            raise SystemExit("the live run did not settle within 60 s")
                        await asyncio.sleep(0.05)

                base = await settle(nodes, channels)
                per_node = Counter(a for s in base.values() for a in s)
                counts = [per_node.get(f"127.0.0.1:{p}", 0) for p in ports[:nodes]]
                mean = statistics.mean(counts)
                row.max_mean, row.min_mean = max(counts) / mean, min(counts) / mean
                if zones:
                    local = [
                        sum(1 for a in held if zone_of[a] == c._balancer.client_labels["zone"])
                        for c, held in base.items()
                    ]
                    row.scheme += f"; fewest local nodes in a subset: {min(local)}"

                def churn(event: str, after: dict[Any, set[str]]) -> None:
                    each = [len(after[c] - base[c]) for c in base if c in after]
                    row.churn[event] = [statistics.mean(each)]
                    row.worst[event] = max(each)

                extra = await register(registry, ports[nodes])
                churn("node joins", await settle(nodes + 1, channels))
                await extra.close()
                await settle(nodes, channels)
                await regs[len(regs) // 2].close()
                churn("node leaves", await settle(nodes - 1, channels))
                regs[len(regs) // 2] = await register(registry, ports[len(regs) // 2])
                await settle(nodes, channels)
                chans.append(channel(registry))
                after = await settle(nodes, channels + 1)
                churn("client joins", after)
                await chans.pop().close()
                await settle(nodes, channels)
                leaving = chans.pop(len(chans) // 2)
                await leaving.close()
                churn("client leaves", await settle(nodes, channels - 1))
    finally:
        await server.stop(None)
    return row


# ------------------------------------------------------------------ the xDS control plane


def _proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MiB, user+system CPU seconds) of process ``pid``, from /proc."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


async def xds_cost(streams: int, nodes: int, updates: int) -> list[str]:
    """Memory and CPU of ``grpc-etcd xds`` per connected client: ``streams`` raw ADS streams
    (one channel each, as separate client processes would have) subscribed to one service's
    LDS, RDS, CDS and EDS, then ``updates`` node registrations pushed to all of them."""
    import subprocess

    import grpc

    import grpc_etcd.aio
    from grpc_etcd.testing import EtcdServer
    from grpc_etcd.xds._protos import AdsStub, DiscoveryRequest
    from grpc_etcd.xds.names import cluster_name
    from grpc_etcd.xds.translate import CDS, EDS, LDS, RDS

    service = "bench.srv.xds"
    names = {
        LDS: service,
        RDS: service,
        CDS: cluster_name(service, {}),
        EDS: cluster_name(service, {}),
    }
    lines = []
    with EtcdServer() as etcd:
        async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
            for i in range(nodes):
                await registry.register(service, address=f"127.0.0.1:{20000 + i}")
            plane = subprocess.Popen(  # noqa: ASYNC220 - once, before any stream
                [sys.executable, "-m", "grpc_etcd.cli", "--etcd", etcd.endpoint, "xds",
                 "--listen", "127.0.0.1:0", "--services", service],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            try:
                assert plane.stdout is not None
                # "xDS control plane listening on 127.0.0.1:PORT (plain text)"
                found = re.search(r"\d+\.\d+\.\d+\.\d+:\d+", plane.stdout.readline())
                assert found is not None, "the control plane did not say where it listens"
                address = found.group()
                channels: list[Any] = []
                queues: list[asyncio.Queue[Any]] = []
                pushes: list[asyncio.Queue[Any]] = []

                async def subscribe(index: int) -> None:
                    channel = grpc.aio.insecure_channel(address)
                    channels.append(channel)
                    requests: asyncio.Queue[Any] = asyncio.Queue()
                    pushed: asyncio.Queue[Any] = asyncio.Queue()
                    queues.append(requests)
                    pushes.append(pushed)

                    async def out() -> Any:
                        while True:
                            item = await requests.get()
                            if item is None:
                                return
                            yield item

                    call = AdsStub(channel).StreamAggregatedResources(out())
                    for type_url, name in names.items():
                        request = DiscoveryRequest(type_url=type_url, resource_names=[name])
                        request.node.id = f"bench-{index}"
                        await requests.put(request)

                    async def read() -> None:
                        async for response in call:
                            ack = DiscoveryRequest(
                                type_url=response.type_url,
                                resource_names=[names[response.type_url]],
                                response_nonce=response.nonce,
                                version_info=response.version_info,
                            )
                            await requests.put(ack)
                            await pushed.put(response.type_url)

                    asyncio.get_running_loop().create_task(read())

                async def received(count: int, type_url: str | None = None, first: int = 0) -> None:
                    for pushed in pushes[first:]:
                        got = 0
                        while got < count:
                            if await pushed.get() == type_url or type_url is None:
                                got += 1

                await subscribe(0)
                await received(len(names))
                base_rss, _ = _proc_stats(plane.pid)
                for index in range(1, streams):
                    await subscribe(index)
                await received(len(names), first=1)  # every stream has all four resources
                rss, _ = _proc_stats(plane.pid)
                per_stream = (rss - base_rss) * 1024 / (streams - 1)
                lines.append(
                    f"| {streams} ADS streams, {nodes} nodes | RSS {base_rss:.0f} MiB with one "
                    f"client, {rss:.0f} MiB with {streams}: **{per_stream:.0f} KiB per client** |"
                )
                costs, walls = [], []
                for i in range(updates):
                    _, before = _proc_stats(plane.pid)
                    start = time.monotonic()
                    await registry.register(service, address=f"127.0.0.1:{30000 + i}")
                    await received(1, EDS)
                    walls.append((time.monotonic() - start) * 1000)
                    await asyncio.sleep(0.2)  # let the plane finish the acks it was sent
                    _, after = _proc_stats(plane.pid)
                    costs.append((after - before) * 1e6 / streams)
                lines.append(
                    f"| one node registered, pushed to {streams} clients (median of {updates}) | "
                    f"plane CPU **{statistics.median(costs):.0f} µs per client**; the last client "
                    f"had it after {statistics.median(walls):.0f} ms |"
                )
                for requests in queues:
                    await requests.put(None)
                for channel in channels:
                    await channel.close()
            finally:
                plane.terminate()
                plane.wait(10)
    return lines


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10, help="random events per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 events, smaller live run")
    parser.add_argument("--no-live", action="store_true", help="the simulation only")
    parser.add_argument("--xds", type=int, default=200, help="ADS streams for the xDS cost")
    args = parser.parse_args()
    events = 3 if args.quick else args.events
    started = time.process_time()
    rows = [
        simulate(clients, nodes, size, scheme, events, args.seed)
        for clients, nodes, size in ROWS
        for scheme in SCHEMES
    ]
    print(f"## Simulation ({events} events of each kind, seed {args.seed})\n")
    print_simulation(rows)
    print(f"\n(simulation CPU time {time.process_time() - started:.1f} s)\n")
    started = time.process_time()
    zone_rows = [
        simulate_zones(*shape, scheme, events, args.seed)
        for shape in ZONE_ROWS
        for scheme in ZONE_SCHEMES
    ]
    print(f"## Zones: three, one subnet each ({events} events of each kind, seed {args.seed})\n")
    print_zones(zone_rows)
    print(f"\n(simulation CPU time {time.process_time() - started:.1f} s)\n")
    if args.no_live:
        return
    shape = (20, 12, 4) if args.quick else (60, 40, 8)
    print(f"## Live: {shape[0]} aio channels x {shape[1]} nodes x {shape[2]}, real etcd\n")
    live_rows = [
        asyncio.run(live(*shape, policy))
        for policy in ("deterministic_subsetting", "random_subsetting")
    ]
    live_rows.append(asyncio.run(live(*shape, "deterministic_subsetting", zones=True)))
    print_simulation(live_rows)
    streams = 20 if args.quick else args.xds
    print(f"\n## The xDS control plane per connected client ({streams} raw ADS streams)\n")
    print("| setup | cost |\n|---|---|")
    for line in asyncio.run(xds_cost(streams, 40, 3 if args.quick else 9)):
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
