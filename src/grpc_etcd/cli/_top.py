"""``grpc-etcd top SERVICE``: a live table of a service's nodes; ``q`` (or Ctrl-C) quits.

For each node: id, version, address, the lease TTL left, the answer to a health check, the
connection state and the health check's round trip. The node set follows the etcd watch;
the other columns are probed once per ``--interval`` (one ``grpc.health.v1.Health/Check`` per
node, one lease lookup per node). Drawn with rich's ``Live`` (the ``cli`` extra); on no terminal
(a pipe, a script) the table is printed once, as plain text, and ``top`` exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import grpc

from ..naming import validate_dotted
from ..node import Node
from ..snapshot import Snapshot
from ._common import Options, check_readable, friendly_errors
from ._nodes import format_table

if TYPE_CHECKING:
    from ..registry.etcd import EtcdClient

__all__ = ["NodeView", "top", "top_rows"]

HEADER = ("ID", "VERSION", "ADDRESS", "TTL", "HEALTH", "CONN", "RTT")
REFRESH_PER_SECOND = 4
PROBE_TIMEOUT = 1.0


@dataclass
class NodeView:
    """What ``top`` knows about one node."""

    node: Node
    ttl: int | None = None
    health: str = "-"
    conn: str = "IDLE"
    rtt: float | None = None


def top_rows(views: Sequence[NodeView]) -> list[tuple[str, ...]]:
    """The table's rows, sorted by version then id (pure, for the tests)."""
    rows: list[tuple[str, ...]] = []
    for view in sorted(views, key=lambda v: (v.node.version, v.node.id)):
        rows.append(
            (
                view.node.id,
                view.node.version or "-",
                view.node.address,
                "-" if view.ttl is None or view.ttl < 0 else f"{view.ttl}s",
                view.health,
                view.conn,
                "-" if view.rtt is None else f"{view.rtt * 1000:.1f} ms",
            )
        )
    return rows


class _Probes:
    """The nodes of the watch, each with a channel whose state and health are probed."""

    def __init__(self, client: EtcdClient, health_service: str) -> None:
        self._client = client
        self._health_service = health_service
        self._lock = threading.Lock()
        self._views: dict[str, NodeView] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self.revision = 0
        #: set once the watch has given the nodes
        self.followed = threading.Event()

    def views(self) -> list[NodeView]:
        with self._lock:
            return list(self._views.values())

    def follow(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.revision = snapshot.revision
            for key in self._views.keys() - snapshot.nodes.keys():
                del self._views[key]
                self._channels.pop(key).close()
            for key, node in snapshot.nodes.items():
                view = self._views.get(key)
                if view is not None and view.node.address == node.address:
                    view.node = node
                    continue
                if view is not None:
                    self._channels.pop(key).close()
                view = self._views[key] = NodeView(node)
                channel = self._channels[key] = grpc.insecure_channel(node.address)
                channel.subscribe(self._on_state(view), try_to_connect=True)
        self.followed.set()

    @staticmethod
    def _on_state(view: NodeView) -> Any:
        def on_state(state: grpc.ChannelConnectivity) -> None:
            view.conn = state.name

        return on_state

    def probe(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with self._lock:
            pairs = [(self._views[k], self._channels[k]) for k in self._views]
        for view, channel in pairs:
            check = health_pb2_grpc.HealthStub(channel).Check
            started = time.monotonic()
            try:
                reply = check(
                    health_pb2.HealthCheckRequest(service=self._health_service),
                    timeout=PROBE_TIMEOUT,
                )
                view.health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                view.rtt = time.monotonic() - started
                view.conn = "READY"  # it answered (its state callback may come a moment later)
            except grpc.RpcError as exc:
                code = exc.code()
                view.health = "no health service" if code is grpc.StatusCode.UNIMPLEMENTED else "-"
                view.rtt = time.monotonic() - started if view.health != "-" else None
                view.conn = "READY" if view.rtt is not None else view.conn
            except ValueError:  # closed while we probed: the node just left
                continue
            view.ttl = self._ttl(view.node)

    def _ttl(self, node: Node) -> int | None:
        from ..registry.etcd import EtcdError

        try:
            kv = self._client.get(node.key)
            if kv is None or not kv.lease:
                return None
            return self._client.lease_time_to_live(kv.lease)
        except (EtcdError, OSError, TimeoutError):
            return None

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._views.clear()


def _render(service: str, probes: _Probes) -> Any:
    from rich.table import Table

    views = probes.views()
    table = Table(
        title=f"{service}: {len(views)} nodes (rev {probes.revision})",
        caption="q quits",
        title_justify="left",
    )
    for name in HEADER:
        table.add_column(name, justify="right" if name in ("TTL", "RTT") else "left")
    for row in top_rows(views):
        style = "" if row[4] in ("SERVING", "no health service") else "red"
        table.add_row(*row, style=style)
    return table


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """A function returning the key pressed (or "") without waiting; cbreak mode on a tty."""
    if not sys.stdin.isatty():
        yield lambda: ""
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def key() -> str:
        ready, _, _ = select.select([fd], [], [], 0)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _print_once(service: str, probes: _Probes, timeout: float) -> None:
    """The table once, as plain text (no terminal to redraw it on): the nodes of the watch,
    each probed once."""
    if not probes.followed.wait(timeout):
        raise click.ClickException(f"etcd sent no nodes of {service} within {timeout:g} s")
    probes.probe()
    views = probes.views()
    click.echo(f"{service}: {len(views)} nodes (rev {probes.revision})")
    click.echo(format_table([HEADER, *top_rows(views)]))


def _follow(reg: Any, service: str, probes: _Probes, stop: threading.Event) -> None:
    snapshots = reg.watch(service)
    try:
        for snapshot in snapshots:
            probes.follow(snapshot)
            if stop.is_set():
                return
    finally:
        close = getattr(snapshots, "close", None)
        if close is not None:
            close()


@click.command()
@click.argument("service")
@click.option("--health-service", default="", help="Service name the health checks ask about.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between probes.")
@click.pass_obj
def top(opts: Options, service: str, health_service: str, interval: float) -> None:
    """A live table of SERVICE's nodes: TTL, health, connection, round trip. q quits.

    On no terminal (a pipe, a script) it prints the table once and exits.
    """
    with friendly_errors():
        try:
            from rich.live import Live
        except ImportError:
            raise click.ClickException(
                "grpc-etcd top needs rich: pip install 'grpc-etcd[cli]'"
            ) from None
        validate_dotted(service)
        if not 0 < interval < float("inf"):  # nan: never probed again
            raise ValueError(f"--interval must be a number of seconds > 0, got {interval}")
        stop = threading.Event()
        with opts.registry() as reg, opts.client() as client:
            check_readable(reg, service)
            probes = _Probes(client, health_service)
            follower = threading.Thread(
                target=_follow, args=(reg, service, probes, stop), daemon=True
            )
            follower.start()
            next_probe = 0.0
            try:
                if not sys.stdout.isatty():
                    _print_once(service, probes, opts.timeout)
                    return
                with (
                    _keys() as key,
                    Live(_render(service, probes), auto_refresh=False, screen=False) as live,
                ):
                    while key() not in ("q", "Q"):
                        if time.monotonic() >= next_probe:
                            probes.probe()
                            next_probe = time.monotonic() + interval
                        live.update(_render(service, probes), refresh=True)
                        stop.wait(1 / REFRESH_PER_SECOND)
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()
                probes.close()
