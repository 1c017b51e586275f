"""The demo: the Go original's scenario, run for real with grpc-etcd.

    make demo            (or: python -m grpc_etcd.demo)

1. starts a throwaway etcd on 127.0.0.1;
2. starts two demo servers (separate processes) registered as ``hwholiday.srv.app`` v1 and v2;
3. lists the nodes as ``grpc-etcd ls`` does, then calls through one BalancedChannel asking for
   v1, v2, v3 and no version, printing which server answered (v3: ``UNAVAILABLE: no match found
   conn``; no version: any server, at random);
4. stops the v2 server cleanly (it deregisters at once) and shows the client noticing;
5. kills the v1 server with SIGKILL and shows the watch removing it when its lease expires.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc

from .. import BalancedChannel, Registry, Snapshot, route
from ..cli._common import Options
from ..cli._nodes import nodes_table, read_nodes
from ..testing import EtcdServer
from . import api_pb2, api_pb2_grpc
from .server import SERVICE

TTL = 3  # seconds; short so that step 5 does not keep you waiting
CALL_TIMEOUT = 2.0

_t0 = time.monotonic()


def say(text: str = "") -> None:
    print(f"[{time.monotonic() - _t0:5.2f}s] {text}" if text else "", flush=True)


def start_server(etcd: str, version: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grpc_etcd.demo.server",
            "--etcd",
            etcd,
            "--version",
            version,
            "--ttl",
            str(TTL),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # "serving <service> <version> on <address> as <key>"
    if not line.startswith("serving"):
        proc.kill()
        raise RuntimeError(f"demo server {version} did not start (exit {proc.wait()})")
    address = line.split(" on ", 1)[1].split()[0]
    say(f"server {version} (pid {proc.pid}) listening on {address}, registered in etcd")
    return proc, address


def call(stub: api_pb2_grpc.ApiStub, asked: str, **kwargs: object) -> None:
    """One call: what it asked for -> who answered (``v1@127.0.0.1:PORT``) or its error."""
    try:
        reply = stub.ApiTest(api_pb2.Request(input="hi"), timeout=CALL_TIMEOUT, **kwargs)
        say(f"  {asked:<28} -> {reply.output}")
    except grpc.RpcError as err:
        say(f"  {asked:<28} -> {err.code().name}: {err.details()}")


def calls(stub: api_pb2_grpc.ApiStub) -> None:
    with route(version="v1"):
        call(stub, "route(version='v1')")
    call(stub, "metadata x-version: v2", metadata=[("x-version", "v2")])
    with route(version="v3"):
        call(stub, "route(version='v3')")
    for i in range(4):
        call(stub, f"no version #{i + 1}")


def stop_all(servers: list[subprocess.Popen[str]]) -> None:
    """Kill the demo servers still running (only those this demo started)."""
    for proc in servers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_removal(
    snapshots: Iterator[Snapshot], address: str, channel: BalancedChannel
) -> float:
    """Seconds until a snapshot removes the node at ``address``; then let the channel catch up.

    The channel has its own watcher; both see the same etcd event within a millisecond or
    so, and the demo's next call must not race it.
    """
    start = time.monotonic()
    for snapshot in snapshots:
        if any(node.address == address for node in snapshot.removed):
            took = time.monotonic() - start
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                seen = channel.snapshot
                if seen is not None and seen.revision >= snapshot.revision:
                    break
                time.sleep(0.005)
            return took
    raise RuntimeError("the watch ended")


def main() -> None:
    """Run the demo from start to end (about TTL + 5 seconds)."""
    servers: list[subprocess.Popen[str]] = []
    with contextlib.ExitStack() as stack:
        etcd = stack.enter_context(EtcdServer())
        say(f"etcd {etcd.version} started on {etcd.endpoint} (pid {etcd.pid})")
        v1, v1_address = start_server(etcd.endpoint, "v1")
        v2, v2_address = start_server(etcd.endpoint, "v2")
        servers += [v1, v2]
        stack.callback(stop_all, servers)

        registry = stack.enter_context(Registry(etcd.endpoint))
        say(f"$ grpc-etcd --etcd {etcd.endpoint} ls {SERVICE}")
        table = nodes_table(read_nodes(Options(etcd.endpoint), SERVICE), one_service=True)
        for line in table.splitlines():
            say("  " + line)

        channel = stack.enter_context(registry.channel(SERVICE))
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        say()
        say("calls through one BalancedChannel, policy 'version' (what was asked -> who answered):")
        calls(stub)
        say("  (a call that names no version goes to any READY server, picked at random)")

        snapshots = registry.watch(SERVICE)
        stack.callback(snapshots.close)  # type: ignore[attr-defined]
        next(snapshots)  # the current nodes
        say()
        say(f"stopping server v2 (SIGTERM, pid {v2.pid}): it deregisters, then drains")
        v2.send_signal(signal.SIGTERM)
        took = wait_for_removal(snapshots, v2_address, channel)
        say(f"  watch: v2 node removed after {took * 1000:.0f} ms")
        call(stub, "metadata x-version: v2", metadata=[("x-version", "v2")])
        with route(version="v1"):
            call(stub, "route(version='v1')")
        v2.wait()

        say()
        say(
            f"killing server v1 (SIGKILL, pid {v1.pid}): no goodbye, its lease (TTL {TTL}s) expires"
        )
        os.kill(v1.pid, signal.SIGKILL)
        v1.wait()
        took = wait_for_removal(snapshots, v1_address, channel)
        say(f"  watch: v1 node removed after {took:.1f} s, when etcd expired its lease")
        call(stub, "no version")
        say()
        say("done: etcd and the servers are stopped, the temp dir is removed")


if __name__ == "__main__":
    # No options: --help says what the demo does (it ran the whole demo, etcd and servers).
    argparse.ArgumentParser(
        prog="python -m grpc_etcd.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    main()
