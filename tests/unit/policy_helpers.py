"""Endpoints for the pure policy and balancer tests (one node per name, each at its own address),
and the fake-clock simulations the load-aware policies' tests share."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Mapping

from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.policies import (
    ConnState,
    DoneCallback,
    DoneInfo,
    Endpoint,
    P2CEwmaPolicy,
    Picker,
    Policy,
)
from grpc_etcd.routing import CallInfo

_PORTS: dict[str, int] = {}


def node(
    name: str,
    version: str = "v1",
    *,
    weight: int | None = None,
    online: bool = True,
    offline: tuple[str, ...] = (),
    **labels: str,
) -> Node:
    """A node ``name`` at an address of its own (the same one each time for the same name)."""
    port = _PORTS.setdefault(name, 20000 + len(_PORTS))
    metadata = dict(labels)
    if weight is not None:
        metadata["weight"] = str(weight)
    methods = {m: MethodInfo(online=False) for m in offline}
    return Node("s", name, f"127.0.0.1:{port}", version, metadata, methods, online=online)


def ep(
    name: str,
    version: str = "v1",
    state: ConnState = ConnState.READY,
    *,
    error: str | None = None,
    serving: bool = True,
    ejected: bool = False,
    **kwargs: object,
) -> Endpoint[str]:
    """An endpoint whose sub-channel is the node's name (so picks read as names)."""
    return Endpoint(node(name, version, **kwargs), name, state, error, serving, ejected)  # type: ignore[arg-type]


def ready(*names: str, **kwargs: object) -> list[Endpoint[str]]:
    """READY endpoints of version v1."""
    return [ep(name, **kwargs) for name in names]  # type: ignore[arg-type]


def spread(picker: Picker[str], n: int, call: CallInfo | None = None) -> Counter[str]:
    """How ``n`` picks of ``call`` spread over the sub-channels."""
    call = call or CallInfo("/pkg.Api/Get")
    return Counter(picker.pick(call).subchannel for _ in range(n))


def share(counts: Mapping[str, int], name: str) -> float:
    """``name``'s share of all the picks counted."""
    return counts.get(name, 0) / sum(counts.values())


CALL = CallInfo("/pkg.Api/Get")


def simulate(policy: Policy, slow: str, calls: int, concurrency: int) -> Counter[str]:
    """Calls kept ``concurrency`` in flight; ``slow`` answers in 30 ms, the others in 1 ms.

    A discrete-event simulation on a fake clock: each done callback gets its call's latency.
    """
    clock = [0.0]
    if isinstance(policy, P2CEwmaPolicy):
        policy._clock = lambda: clock[0]  # the picker reads it at build time
    picker = policy.build(ready("a", "b", slow))
    latency = {"a": 0.001, "b": 0.001, slow: 0.030}
    running: list[tuple[float, int, DoneCallback, float]] = []
    counts: Counter[str] = Counter()
    for i in range(calls):
        while len(running) >= concurrency:
            clock[0], _, done, took = heapq.heappop(running)
            done(DoneInfo("OK", took))
        pick = picker.pick(CALL)
        counts[pick.subchannel] += 1
        assert pick.done is not None
        took = latency[pick.subchannel]
        heapq.heappush(running, (clock[0] + took, i, pick.done, took))
    for _, _, done, took in running:
        done(DoneInfo("OK", took))
    return counts


def hung_node(policy: Policy, clock: list[float], calls: int = 400) -> int:
    """Issue 12's open loop on a fake clock: three nodes answer in 1 ms, then a fourth joins
    that accepts calls and never answers (each of its calls ends at the 2 s deadline); one
    call every 10 ms. Returns how many of the ``calls`` went to the hung node."""
    running: list[tuple[float, int, DoneCallback, DoneInfo]] = []

    def until(now: float) -> None:
        while running and running[0][0] <= now:
            clock[0], _, done, info = heapq.heappop(running)
            done(info)
        clock[0] = now

    def call(picker: object, number: int) -> str:
        pick = picker.pick(CALL)  # type: ignore[attr-defined]
        assert pick.done is not None
        if pick.subchannel == "hung":
            info, ends = DoneInfo("DEADLINE_EXCEEDED", 2.0), clock[0] + 2.0
        else:
            info, ends = DoneInfo("OK", 0.001), clock[0] + 0.001
        heapq.heappush(running, (ends, number, pick.done, info))
        return str(pick.subchannel)

    warm = policy.build(ready("a", "b", "c"))
    for number in range(50):
        until(number * 0.01)
        call(warm, number)
    picker = policy.build(ready("a", "b", "c", "hung"))
    lost = 0
    for number in range(50, 50 + calls):
        until(number * 0.01)
        lost += call(picker, number) == "hung"
    until(float("inf"))
    return lost


def addresses(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct addresses spread over 10.0.0.0/16 (fixed seed), sorted."""
    rnd = random.Random(seed)
    return sorted({f"10.0.{rnd.randrange(256)}.{rnd.randrange(256)}:{8000 + i}" for i in range(n)})
