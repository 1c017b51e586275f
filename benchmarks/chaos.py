"""The chaos suite: steady load through a BalancedChannel while one thing breaks at a time.

    python benchmarks/chaos.py [--rate 100] [--only drain,kill9] [--markdown]

Everything runs on loopback: a fresh etcd (a 3-member cluster for the leader scenario) and
three echo servers in their own processes (``chaos_server.py``, which drains with
``grpc_etcd.serve``) per scenario. A load thread sends ``--rate`` calls per second (each with a
2 s deadline) through a sync BalancedChannel; after 1 s of steady load the fault happens,
and the load goes on until the system has had ``--settle`` seconds to recover. For each
scenario: calls sent, calls failed, failed calls started more than 1 s after the fault, and
the time to recover (fault start to the end of the last failed call; 0 when none failed).
Every scenario is bounded in time and the whole run stops itself (``--budget``).

The ``hung-*`` scenarios measure one thing across policies (issue 12): a 4th server that
accepts calls and never answers joins the three; once the channel is READY on all four,
exactly ``--hung-calls`` calls (400) go out open-loop, one every 10 ms at the default rate,
each with the 2 s deadline, and the table counts how many were lost. No outlier detection:
what is measured is the policy alone (and hedging, for the hedging row).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

import grpc_etcd
from grpc_etcd.config import parse_config
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.errors import ConfigError
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdCluster, EtcdServer, TcpProxy

SERVICE = "test.srv.echo"
SERVER = Path(__file__).with_name("chaos_server.py")
DEADLINE = 2.0  # per call
WARMUP = 1.0  # steady load before the fault
LATE = 1.0  # a failure of a call started this long after the fault counts as "late"
RETRY_CONFIG = {
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
    ]
}
HUNG_CALLS = 400
#: Hedging for the hung-server row: a second attempt on another node after 0.2 s without an
#: answer (10x a loaded call here; well inside the 2 s deadline).
HEDGE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],
            "hedgingPolicy": {
                "maxAttempts": 2,
                "hedgingDelay": "0.2s",
                "nonFatalStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def policy_config(name: str) -> dict[str, Any]:
    """A config that only names the load-balancing policy."""
    return {"loadBalancingConfig": [{name: {}}]}


EJECT_CONFIG = {
    "outlierDetection": {
        "interval": "1s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 34,
        "consecutiveErrors": 3,
    }
}


@dataclass
class Call:
    started: float
    ended: float
    code: str


@dataclass
class Result:
    scenario: str
    sent: int
    failed: int
    late: int
    recover: float
    goal: str
    note: str = ""
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        if self.goal == "0 failed":
            return self.failed == 0
        if self.goal == "0 late":
            return self.late == 0
        if self.goal.startswith("<="):
            return self.failed <= int(self.goal[2:].split()[0])
        return True


class Server:
    """One ``chaos_server.py`` process (ours: we signal or kill only this PID)."""

    def __init__(self, etcd: str, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--etcd", etcd, "--name", name, *args],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.kill()
            raise RuntimeError(f"server {name} did not start: {line!r}")

    def terminate(self, timeout: float = 15.0) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Load:
    """Calls at a fixed rate from a thread pool; ``stop()`` returns every call's outcome."""

    def __init__(
        self, api: Any, rate: float, wait_for_ready: bool = False, limit: int | None = None
    ) -> None:
        self._api = api
        self._limit = limit
        self._wait_for_ready = wait_for_ready
        self._interval = 1.0 / rate
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = futures.ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)
        self._thread.start()

    def _one(self) -> None:
        started = time.monotonic()
        try:
            self._api.ApiTest(
                api_pb2.Request(input="x"), timeout=DEADLINE, wait_for_ready=self._wait_for_ready
            )
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name  # type: ignore[attr-defined]
        with self._lock:
            self._calls.append(Call(started, time.monotonic(), code))

    def _run(self) -> None:
        next_at = time.monotonic()
        sent = 0
        while not self._stop.is_set() and (self._limit is None or sent < self._limit):
            self._pool.submit(self._one)
            sent += 1
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self, *, wait: bool = False) -> list[Call]:
        """Stop sending (``wait``: once the ``limit`` calls are sent) and return every call's
        outcome once they all ended."""
        if not wait:
            self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        return sorted(self._calls, key=lambda call: call.started)


class Lab:
    """A scenario's world: etcd, three servers, a registry and a channel with ``config``."""

    def __init__(self, *, cluster: bool = False, config: dict[str, Any] | None = None) -> None:
        self.etcd: EtcdServer | EtcdCluster = EtcdCluster(3) if cluster else EtcdServer()
        self.etcd.__enter__()
        self.endpoint = ",".join(self.etcd.endpoints)
        # The client reaches etcd through a proxy, so a scenario can make its watch lag.
        self.proxy = TcpProxy(self.etcd.endpoints[0]) if not cluster else None
        self.servers: dict[str, Server] = {}
        for name in ("a", "b", "c"):
            self.spawn(name)
        client_endpoint = self.proxy.endpoint if self.proxy else self.endpoint
        self.registry = grpc_etcd.Registry(client_endpoint.split(","))
        # The code's config: etcd holds no config document here, so it stays in force.
        self.channel = self.registry.channel(SERVICE, config=config)
        self.api = api_pb2_grpc.ApiStub(self.channel)  # type: ignore[no-untyped-call]
        for _ in range(50):  # warm: every node connected before the clock starts
            self.api.ApiTest(api_pb2.Request(input="warm"), timeout=5, wait_for_ready=True)

    def wait_ready(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the channel has ``count`` READY sub-channels (a new node was registered,
        seen by the watch and connected to)."""
        deadline = time.monotonic() + timeout
        ready = grpc.ChannelConnectivity.READY
        while sum(s is ready for s in self.channel.subchannel_states().values()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} nodes READY after {timeout} s")
            time.sleep(0.005)  # the channel offers no event for one node's state

    def spawn(self, name: str, *args: str) -> Server:
        self.servers[name] = Server(self.endpoint, name, *args)
        return self.servers[name]

    def close(self) -> None:
        for server in self.servers.values():
            server.kill()
        with contextlib.suppress(Exception):
            self.registry.close()
        if self.proxy is not None:
            self.proxy.close()
        self.etcd.__exit__(None, None, None)


# ---------------------------------------------------------------- the faults


def drain_one(lab: Lab) -> None:
    lab.servers["a"].terminate()


def rolling_restart(lab: Lab) -> None:
    for name in ("a", "b", "c"):
        lab.servers[name].terminate()
        lab.spawn(name)


def kill9(lab: Lab) -> None:
    lab.servers["a"].proc.send_signal(signal.SIGKILL)
    lab.servers["a"].proc.wait(10)


def etcd_restart(lab: Lab) -> None:
    assert isinstance(lab.etcd, EtcdServer)
    lab.etcd.stop()
    time.sleep(1.0)  # etcd stays down a while: the fault itself, not a wait for an event
    lab.etcd.start()


def etcd_wipe(lab: Lab) -> None:
    assert isinstance(lab.etcd, EtcdServer)
    lab.etcd.restart(wipe=True)


def leader_loss(lab: Lab) -> None:
    assert isinstance(lab.etcd, EtcdCluster)
    lab.etcd.stop(lab.etcd.leader())


def lagging_compaction(lab: Lab) -> None:
    assert lab.proxy is not None
    lab.proxy.cut()  # the client's watch falls behind...
    with EtcdClient(lab.endpoint) as etcd:
        lab.servers["a"].terminate()  # ...while a node leaves: its delete must not be missed
        revision = etcd.put("/chaos/marker", "x")
        etcd.compact(revision)
    lab.proxy.restore()


def junk_records(lab: Lab) -> None:
    with EtcdClient(lab.endpoint) as etcd:
        for i in range(1000):
            etcd.put(f"/test/srv/echo/junk-{i}", "{broken")


def failing_server(lab: Lab) -> None:
    lab.spawn("bad", "--fail")


def hanging_server(lab: Lab) -> None:
    lab.spawn("hung", "--hang")


@dataclass
class Scenario:
    name: str
    title: str
    fault: Callable[[Lab], None]
    goal: str
    cluster: bool = False
    config: dict[str, Any] | None = None
    settle: float = 3.0
    wait_for_ready: bool = False
    #: Send exactly this many calls once the fault is in place (and every node READY),
    #: instead of a steady load around the fault.
    calls: int | None = None


SCENARIOS = [
    Scenario("drain", "SIGTERM drain of one of three", drain_one, "0 failed"),
    Scenario("rolling", "rolling restart of all three", rolling_restart, "0 failed"),
    Scenario("kill9", "kill -9 of one (no retry policy)", kill9, "0 late"),
    Scenario("kill9-retry", "kill -9 of one, retry policy", kill9, "0 failed", config=RETRY_CONFIG),
    Scenario("kill9-wfr", "kill -9 of one, retry policy, wait_for_ready calls", kill9, "0 failed",
             config=RETRY_CONFIG, wait_for_ready=True),
    Scenario("etcd-restart", "etcd stopped 1 s and restarted", etcd_restart, "0 failed"),
    Scenario("etcd-wipe", "etcd restarted empty", etcd_wipe, "0 failed"),
    Scenario("leader", "etcd leader stopped (3 members)", leader_loss, "0 failed", cluster=True),
    Scenario("compaction", "compaction under a lagging watcher", lagging_compaction, "0 failed"),
    Scenario("junk", "1,000 junk records written", junk_records, "0 failed"),
    Scenario("failing", "a 4th server fails every call", failing_server, "<=10 failed",
             config=EJECT_CONFIG),
    Scenario("hanging", "a 4th server never answers", hanging_server, "", config=EJECT_CONFIG),
    Scenario("hung-random", "a 4th server never answers: random", hanging_server, "",
             config=policy_config("random"), calls=HUNG_CALLS),
    Scenario("hung-round-robin", "a 4th server never answers: round_robin", hanging_server, "",
             config=policy_config("round_robin"), calls=HUNG_CALLS),
    Scenario("hung-least-request", "a 4th server never answers: least_request", hanging_server,
             "<=10 failed", config=policy_config("least_request"), calls=HUNG_CALLS),
    Scenario("hung-p2c", "a 4th server never answers: p2c_ewma", hanging_server, "<=10 failed",
             config=policy_config("p2c_ewma"), calls=HUNG_CALLS),
    Scenario("hung-hedging", "a 4th server never answers: round_robin + hedging (0.2 s)",
             hanging_server, "0 failed", config=HEDGE_CONFIG, calls=HUNG_CALLS),
]  # fmt: skip


def run(scenario: Scenario, rate: float) -> Result:
    if scenario.config is not None:
        try:
            parse_config(scenario.config)
        except ConfigError as exc:  # e.g. hedgingPolicy before config.py knew it
            return Result(scenario.title, 0, 0, 0, 0.0, scenario.goal or "(none)",
                          note=f"not run: {str(exc).splitlines()[0]}")  # fmt: skip
    lab = Lab(cluster=scenario.cluster, config=scenario.config)
    try:
        if scenario.calls is not None:
            fault_at = time.monotonic()
            scenario.fault(lab)
            lab.wait_ready(len(lab.servers))
            load = Load(lab.api, rate, scenario.wait_for_ready, limit=scenario.calls)
            calls = load.stop(wait=True)
        else:
            load = Load(lab.api, rate, scenario.wait_for_ready)
            time.sleep(WARMUP)  # steady load before the fault, at the benchmark's fixed rate
            fault_at = time.monotonic()
            scenario.fault(lab)
            time.sleep(scenario.settle + DEADLINE)  # the load goes on while the system recovers
            calls = load.stop()
    finally:
        lab.close()
    failed = [call for call in calls if call.code != "OK"]
    codes: dict[str, int] = {}
    for call in failed:
        codes[call.code] = codes.get(call.code, 0) + 1
    return Result(
        scenario.title,
        sent=len(calls),
        failed=len(failed),
        late=sum(1 for call in failed if call.started > fault_at + LATE),
        recover=max((call.ended - fault_at for call in failed), default=0.0),
        goal=scenario.goal or "(none)",
        codes=codes,
    )


def table(results: list[Result]) -> Iterator[str]:
    yield "| scenario | sent | failed | failed > 1 s after | recovered after | goal | met |"
    yield "|---|---:|---:|---:|---:|---|---|"
    for r in results:
        codes = ", ".join(f"{n} {c}" for c, n in sorted(r.codes.items()))
        failed = f"{r.failed} ({codes})" if codes else "0"
        met = ("yes" if r.met else "**no**") + (f" - {r.note}" if r.note else "")
        yield (
            f"| {r.scenario} | {r.sent} | {failed} | {r.late} | {r.recover:.2f} s "
            f"| {r.goal} | {met} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--budget", type=float, default=600.0, help="stop after this (s)")
    args = parser.parse_args()
    # The junk scenario makes the watcher warn once per bad key (as it must): 1,000 lines.
    logging.basicConfig(level=logging.ERROR)
    wanted = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]
    deadline = time.monotonic() + args.budget
    results = []
    for scenario in wanted:
        if time.monotonic() > deadline:
            print(f"budget spent: {scenario.name} not run", file=sys.stderr)
            continue
        print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
        results.append(run(scenario, args.rate))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
