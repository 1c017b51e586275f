"""The xDS control plane: etcd write -> an unmodified grpcio client routing by it, and the
throughput of an ``xds:///`` channel next to a plain channel and our BalancedChannel.

    .venv/bin/python benchmarks/xds_latency.py [--samples 50] [--seconds 2] [--rounds 5] [--quick]

Setup: a throwaway etcd; ``grpc-etcd xds`` in its own process; four demo servers (sync grpcio,
8 threads) in this process; the client in a process of its own with only
``GRPC_XDS_BOOTSTRAP_CONFIG`` set (grpcio reads it once per process). Both processes read
CLOCK_MONOTONIC, which they share.

Latency, two kinds of change, each written by our etcd client in this process, the clock
started just before the write (so it includes the write's round trip to etcd):
  - "new version": a record with a version nobody had (each record names a port of the "idle"
    server that nobody has connected to yet, as a new server would be), until a call pinned to it
    (``x-version``) succeeds - the whole chain: RDS gains a route, CDS a cluster, EDS its
    endpoints, the client connects and calls. The client retries every call at once while it
    fails with the control plane's "no match found conn" drop, every 0.5 ms.
  - "new node": a record of an existing version for an idle server, until round robin sends
    a call to it (EDS only; includes the new connection).
  - "raw ADS stream": the same kind of record, until the control plane's EDS push reaches a
    bare ADS stream in this process: our part of the chain alone, without grpcio's xDS client.
Each record is deleted again before the next sample and the client waits until it is gone.

Throughput: sequential unary calls from 1 thread, then 8 threads, over ``--rounds`` rounds of
``--seconds`` per channel, the channels alternating so they see the same noise: a plain
channel to one server, a plain channel with ``round_robin`` over the three, the ``xds:///``
channel (round robin over the same three, via the control plane), our BalancedChannel (its
default policy). Reported: median calls/s over the rounds and the ratio to the plain channel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

SERVICE = "bench.srv.xds"
METHOD = "/proto.Api/ApiTest"
#: Pause between two tries of the waiting client: a busy loop would take a core from the
#: control plane and etcd on a small machine.
POLL = 0.0005


def _request() -> bytes:
    return b"\n\x02hi"


# ---------------------------------------------------------------- the client process


def _client_main() -> None:
    channels: dict[str, grpc.Channel] = {}

    def stub(target: str) -> Callable[..., bytes]:
        channel = channels.get(target)
        if channel is None:
            channel = channels[target] = grpc.insecure_channel(target)
        return channel.unary_unary(METHOD)  # type: ignore[no-any-return]

    def wait(command: dict[str, Any]) -> dict[str, Any]:
        call = stub(f"xds:///{SERVICE}")
        metadata = [("x-version", command["version"])]
        want, gone = command.get("server"), command.get("gone", False)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                output = call(_request(), metadata=metadata, timeout=2.0)[2:].decode()
                ok = output.split("|")[0] == want if want else True
            except grpc.RpcError:
                ok = False
            if ok != gone:
                return {"t": time.monotonic()}
            time.sleep(POLL)
        return {"t": None}

    def throughput(command: dict[str, Any]) -> dict[str, Any]:
        target, seconds, threads = command["target"], command["seconds"], command["threads"]
        if target.startswith("balanced:"):
            import grpc_etcd

            key = target
            if key not in channels:
                registry = grpc_etcd.Registry(target.removeprefix("balanced:"))
                channels[key] = registry.channel(SERVICE)
            call = channels[key].unary_unary(METHOD)
        elif target.startswith("rr:"):
            key = target
            if key not in channels:
                channels[key] = grpc.insecure_channel(
                    "ipv4:" + target.removeprefix("rr:"),
                    options=[("grpc.lb_policy_name", "round_robin")],
                )
            call = channels[key].unary_unary(METHOD)
        else:
            call = stub(target)
        for _ in range(50):  # warm up: connections made, pickers built
            call(_request(), timeout=5.0, wait_for_ready=True)
        counts = [0] * threads
        stop = time.monotonic() + seconds

        def loop(i: int) -> None:
            while time.monotonic() < stop:
                call(_request(), timeout=5.0)
                counts[i] += 1

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return {"rate": sum(counts) / seconds}

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        handler = wait if command["op"] == "wait" else throughput
        print(json.dumps(handler(command)), flush=True)


# ---------------------------------------------------------------- the measuring side


class _Servers:
    """Named servers; ``idle_ports`` more ports for the one named ``idle``, so that every
    sample can register an address no client has connected to yet."""

    def __init__(self, names: list[str], idle_ports: int = 0) -> None:
        self.addresses: dict[str, str] = {}
        self.idle: list[str] = []
        self._servers: list[grpc.Server] = []
        for name in names:

            def answer(request: bytes, context: grpc.ServicerContext, name: str = name) -> bytes:
                text = f"{name}|".encode()
                return b"\n" + bytes([len(text)]) + text

            handler = grpc.method_handlers_generic_handler(
                "proto.Api", {"ApiTest": grpc.unary_unary_rpc_method_handler(answer)}
            )
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler])
            port = server.add_insecure_port("127.0.0.1:0")
            if name == "idle":
                self.idle = [f"127.0.0.1:{port}"] + [
                    f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
                    for _ in range(idle_ports)
                ]
            server.start()
            self._servers.append(server)
            self.addresses[name] = f"127.0.0.1:{port}"

    def close(self) -> None:
        for server in self._servers:
            server.stop(None)


class _Process:
    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.first_line = self.readline()

    def readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args[:3]} exited ({self.process.poll()})")
        return line

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return dict(json.loads(self.readline()))

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.terminate()
        self.process.wait(10)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _latency(kv: Any, client: _Process, servers: _Servers, samples: int) -> dict[str, list[float]]:
    from grpc_etcd.naming import instance_key
    from grpc_etcd.node import Node, encode_record

    results: dict[str, list[float]] = {"new version": [], "new node": []}
    for i in range(samples + 1):  # the first of each kind is a warm-up, not counted
        for kind in results:
            version = f"n{i}" if kind == "new version" else "v1"
            name = "idle"
            address = servers.idle[2 * i + (kind == "new node")]
            node = Node(SERVICE, f"bench-{kind[4:7]}-{i}", address, version)
            key = instance_key(SERVICE, node.id)
            wait = {"op": "wait", "version": version, "server": name}
            # The client polls from the moment it reads the command; the write follows it.
            assert client.process.stdin is not None
            client.process.stdin.write(json.dumps(wait) + "\n")
            client.process.stdin.flush()
            time.sleep(0.05)
            start = time.monotonic()
            kv.put(key, encode_record(node))
            seen = json.loads(client.readline())["t"]
            if seen is None:
                raise RuntimeError(f"{kind} sample {i}: the client never reached it")
            if i:
                results[kind].append((seen - start) * 1000)
            kv.delete(key)
            gone = client.ask({**wait, "gone": True})
            if gone["t"] is None:
                raise RuntimeError(f"{kind} sample {i}: the client never saw it go")
    return results


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _plane_only(kv: Any, plane_address: str, samples: int) -> list[float]:
    """etcd write -> the control plane's EDS push on a raw ADS stream: our part alone."""
    import queue

    from grpc_etcd.naming import instance_key
    from grpc_etcd.node import Node, encode_record
    from grpc_etcd.xds._protos import AdsStub, DiscoveryRequest
    from grpc_etcd.xds.translate import EDS

    requests: queue.Queue[Any] = queue.Queue()
    cluster = f"{SERVICE}|version=v1"

    def ask(nonce: str = "", version: str = "") -> None:
        request = DiscoveryRequest(type_url=EDS, resource_names=[cluster])
        request.response_nonce, request.version_info = nonce, version
        request.node.id = "bench"
        requests.put(request)

    channel = grpc.insecure_channel(plane_address)
    responses = AdsStub(channel).StreamAggregatedResources(iter(requests.get, None))
    try:
        ask()
        first = next(responses)
        ask(first.nonce, first.version_info)
        results: list[float] = []
        for i in range(samples):
            node = Node(SERVICE, f"raw-{i}", f"127.0.0.1:{40000 + i}", "v1")
            start = time.monotonic()
            kv.put(instance_key(SERVICE, node.id), encode_record(node))
            response = next(responses)
            results.append((time.monotonic() - start) * 1000)
            ask(response.nonce, response.version_info)
            kv.delete(instance_key(SERVICE, node.id))
            response = next(responses)
            ask(response.nonce, response.version_info)
        return results
    finally:
        requests.put(None)
        channel.close()


def _machine() -> str:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo").read().splitlines():  # noqa: SIM115
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = _load()
    return (
        f"{os.cpu_count()} CPU {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, load {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 samples, 3 rounds of 1 s")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client_main()
        return
    if args.quick:
        args.samples, args.rounds, args.seconds = 10, 3, 1.0

    import grpc_etcd
    from grpc_etcd.registry.etcd import EtcdClient
    from grpc_etcd.testing import EtcdServer
    from grpc_etcd.xds import bootstrap_json

    print(f"machine: {_machine()}")
    with EtcdServer() as etcd, grpc_etcd.Registry(etcd.endpoint) as registry:
        servers = _Servers(["s1", "s2", "s3", "idle"], idle_ports=2 * args.samples + 2)
        registrations = [
            registry.register(SERVICE, address=servers.addresses[n], version="v1")
            for n in ("s1", "s2", "s3")
        ]
        plane = _Process(
            [
                sys.executable,
                "-m",
                "grpc_etcd.cli",
                "--etcd",
                etcd.endpoint,
                "xds",
                "--listen",
                "127.0.0.1:0",
            ]
        )
        # "xDS control plane listening on 127.0.0.1:PORT (plain text)"
        found = re.search(r"\d+\.\d+\.\d+\.\d+:\d+", plane.first_line)
        if found is None:
            raise SystemExit(f"the control plane did not say where it listens: {plane.first_line}")
        address = found.group()
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap_json(address)}
        client = _Process([sys.executable, __file__, "--client"], env)
        try:
            with EtcdClient(etcd.endpoint) as kv:
                latency = _latency(kv, client, servers, args.samples)
                latency["new node, raw ADS stream (the control plane alone)"] = _plane_only(
                    kv, address, args.samples
                )
            print(f"\n## etcd write -> xDS client routing ({args.samples} samples each)\n")
            print("| change | p50 ms | p90 ms | p99 ms | max ms |")
            print("|---|---:|---:|---:|---:|")
            for kind, values in latency.items():
                cells = [_percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values)]
                print(f"| {kind} | " + " | ".join(f"{v:.1f}" for v in cells) + " |")

            three = ",".join(servers.addresses[n] for n in ("s1", "s2", "s3"))
            targets = {
                "plain (1 server)": servers.addresses["s1"],
                "plain round_robin (3)": "rr:" + three,
                "xds:/// (3)": f"xds:///{SERVICE}",
                "BalancedChannel (3)": "balanced:" + etcd.endpoint,
            }
            rounds = f"median of {args.rounds} rounds of {args.seconds} s"
            print(f"\n## throughput, calls/s ({rounds})\n")
            print("| channel | 1 thread | vs plain | 8 threads | vs plain |")
            print("|---|---:|---:|---:|---:|")
            rates: dict[tuple[str, int], list[float]] = {}
            for threads in (1, 8):
                for _ in range(args.rounds):
                    for label, target in targets.items():
                        command = {"op": "throughput", "target": target}
                        command |= {"seconds": args.seconds, "threads": threads}
                        rate = client.ask(command)["rate"]
                        rates.setdefault((label, threads), []).append(rate)
            base = {t: statistics.median(rates[("plain (1 server)", t)]) for t in (1, 8)}
            for label in targets:
                cells = []
                for threads in (1, 8):
                    median = statistics.median(rates[(label, threads)])
                    cells += [f"{median:,.0f}", f"{median / base[threads]:.2f}x"]
                print(f"| {label} | " + " | ".join(cells) + " |")
            print(f"\nload after: {_load()}")
        finally:
            client.close()
            plane.close()
            for registration in registrations:
                registration.close()
            servers.close()


if __name__ == "__main__":
    main()
