"""The ``grpc-etcd`` command: run a local etcd, list and watch registered nodes.

    grpc-etcd etcd                      # a throwaway etcd in the foreground (for trying things)
    grpc-etcd ls [SERVICE] [--json]     # id, version, address, metadata, lease TTL left
    grpc-etcd watch SERVICE             # one line per change

``--etcd HOST:PORT[,HOST:PORT...]`` or ``GRPC_ETCD_ENDPOINTS`` chooses the cluster.
Errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from .errors import RecordError
from .naming import service_prefix
from .node import Node, decode_record
from .snapshot import Snapshot

__all__ = ["format_change", "format_table", "main"]

ENV_ENDPOINTS = "GRPC_ETCD_ENDPOINTS"


class _Options:
    def __init__(self, endpoints: str, root: str, timeout: float) -> None:
        self.endpoints = endpoints
        self.root = root
        self.timeout = timeout


@contextlib.contextmanager
def _friendly_errors() -> Iterator[None]:
    """Turn our errors into one line on stderr and exit status 1."""
    from .registry.etcd import EtcdError

    try:
        yield
    except (EtcdError, ValueError, RecordError, OSError, TimeoutError) as exc:
        raise click.ClickException(str(exc) or type(exc).__name__) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--etcd",
    "endpoints",
    envvar=ENV_ENDPOINTS,
    default="127.0.0.1:2379",
    show_default=True,
    help=f"etcd endpoints, comma-separated (or ${ENV_ENDPOINTS}).",
)
@click.option("--root", default="", help="Key prefix every service lives under.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per etcd request.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.version_option(package_name="grpc-etcd")
@click.pass_context
def main(ctx: click.Context, endpoints: str, root: str, timeout: float, verbose: bool) -> None:
    """Register gRPC servers in etcd, discover them, balance calls across them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = _Options(endpoints, root, timeout)


@main.command()
@click.option("--port", default=0, help="Client port (0: a free one).")
def etcd(port: int) -> None:
    """Run a throwaway etcd on 127.0.0.1 until Ctrl-C (its data is deleted on exit)."""
    from .testing import EtcdServer

    with _friendly_errors(), EtcdServer(client_port=port or None) as server:
        click.echo(
            f"etcd {server.version} listening on {server.endpoint} (data in {server.data_dir})"
        )
        click.echo(f"try: {ENV_ENDPOINTS}={server.endpoint} grpc-etcd ls")
        click.echo("Ctrl-C to stop")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            while server.running:
                time.sleep(0.5)


def _service_of_key(key: str, root: str) -> str:
    """``/hwholiday/srv/app/<id>`` -> ``hwholiday.srv.app`` (or the raw path for other layouts)."""
    path = key[len(root.rstrip("/")) :] if root else key
    parent = path.rsplit("/", 1)[0]
    if parent.startswith("/"):
        return parent.strip("/").replace("/", ".")
    return parent


def _read_nodes(opts: _Options, service: str | None) -> list[tuple[Node, int]]:
    """The nodes under ``service`` (or under the root), each with its lease's TTL left."""
    from .registry.etcd import EtcdClient

    prefix = service_prefix(service, opts.root) if service else (opts.root.rstrip("/") + "/")
    with EtcdClient(opts.endpoints, timeout=opts.timeout) as client:
        kvs, _ = client.get_prefix(prefix)
        rows: list[tuple[Node, int]] = []
        for kv in kvs:
            key = kv.key.decode("utf-8", "replace")
            try:
                node = decode_record(
                    kv.value, key=key, service=service or _service_of_key(key, opts.root)
                )
            except RecordError as exc:
                click.echo(f"warning: skipping {exc}", err=True)
                continue
            ttl = client.lease_time_to_live(kv.lease) if kv.lease else -1
            rows.append((node, ttl))
    return rows


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _metadata_text(node: Node) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(node.metadata.items())) or "-"


@main.command(name="ls")
@click.argument("service", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node.")
@click.pass_obj
def list_nodes(opts: _Options, service: str | None, as_json: bool) -> None:
    """List registered nodes: of SERVICE, or of every service."""
    with _friendly_errors():
        rows = _read_nodes(opts, service)
    if as_json:
        for node, ttl in rows:
            click.echo(json.dumps(_node_json(node, ttl)))
        return
    if not rows:
        click.echo(f"no nodes registered under {service or 'the root'}", err=True)
        return
    header = ["SERVICE", "ID", "VERSION", "ADDRESS", "METADATA", "TTL"]
    body = [
        [
            node.service,
            node.id,
            node.version or "-",
            node.address,
            _metadata_text(node),
            f"{ttl}s" if ttl >= 0 else "-",
        ]
        for node, ttl in sorted(rows, key=lambda r: (r[0].service, r[0].version, r[0].id))
    ]
    if service:  # one service: its name would repeat on every line
        header, body = header[1:], [row[1:] for row in body]
    click.echo(format_table([header, *body]))


def _node_json(node: Node, ttl: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "service": node.service,
        "id": node.id,
        "version": node.version,
        "address": node.address,
        "metadata": dict(node.metadata),
        "key": node.key,
    }
    if ttl is not None:
        out["ttl"] = ttl
    return out


def format_change(snapshot: Snapshot) -> list[str]:
    """Lines describing what ``snapshot`` changed: ``+`` added, ``-`` removed, ``~`` updated."""
    lines = []
    for mark, nodes in (("+", snapshot.added), ("~", snapshot.updated), ("-", snapshot.removed)):
        for node in nodes:
            lines.append(
                f"{mark} {node.id}  {node.version or '-'}  {node.address}  {_metadata_text(node)}"
                f"  (rev {snapshot.revision}, {len(snapshot)} nodes)"
            )
    return lines


@main.command()
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change.")
@click.pass_obj
def watch(opts: _Options, service: str, as_json: bool) -> None:
    """Print one line per change of SERVICE's nodes until Ctrl-C."""
    from .registry import Registry

    with _friendly_errors(), Registry(opts.endpoints, timeout=opts.timeout, root=opts.root) as reg:
        snapshots = reg.watch(service)
        try:
            for snapshot in snapshots:
                if as_json:
                    click.echo(
                        json.dumps(
                            {
                                "revision": snapshot.revision,
                                "added": [_node_json(n) for n in snapshot.added],
                                "updated": [_node_json(n) for n in snapshot.updated],
                                "removed": [_node_json(n) for n in snapshot.removed],
                            }
                        ),
                        nl=True,
                    )
                    continue
                for line in format_change(snapshot) or [f"  no nodes (rev {snapshot.revision})"]:
                    click.echo(line)
        except KeyboardInterrupt:
            pass
        finally:
            close = getattr(snapshots, "close", None)
            if close is not None:
                close()


if __name__ == "__main__":  # pragma: no cover
    main()
