"""``grpc-etcd ls`` and ``grpc-etcd watch``: the registered nodes, now and as they change."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from typing import Any

import click

from ..errors import RecordError
from ..naming import RESERVED_PREFIX, service_prefix, validate_dotted
from ..node import Node
from ..record import decode_record
from ..snapshot import Snapshot
from ._common import Options, check_readable, friendly_errors
from ._liveness import Liveness

__all__ = ["format_change", "format_table", "list_nodes", "nodes_table", "read_nodes", "watch"]


def _service_of_key(key: str, root: str) -> str:
    """``/hwholiday/srv/app/<id>`` -> ``hwholiday.srv.app`` (or the raw path for other layouts)."""
    path = key[len(root.rstrip("/")) :] if root else key
    parent = path.rsplit("/", 1)[0]
    if parent.startswith("/"):
        return parent.strip("/").replace("/", ".")
    return parent


def read_nodes(opts: Options, service: str | None) -> list[tuple[Node, int]]:
    """The nodes under ``service`` (or under the root: every service), each with its lease's
    TTL left, in one order: by service, version, id. grpc-etcd's own keys are no node: those
    of the root, and of any root below it (``<root>/prod/grpc-etcd/...``)."""
    root = opts.root.rstrip("/")
    prefix = service_prefix(service, opts.root) if service else root + "/"
    skipped: dict[str, list[RecordError]] = {}  # by service: the keys that did not decode
    with opts.client() as client:
        kvs, _ = client.get_prefix(prefix)
        rows: list[tuple[Node, int]] = []
        for kv in kvs:
            key = kv.key.decode("utf-8", "replace")
            if service is None and RESERVED_PREFIX in key[len(root) :]:
                continue  # service configs and client keys, not services
            name = service or _service_of_key(key, opts.root)
            try:
                node = decode_record(kv.value, key=key, service=name)
            except RecordError as exc:
                skipped.setdefault(name, []).append(exc)
                continue
            ttl = client.lease_time_to_live(kv.lease) if kv.lease else -1
            rows.append((node, ttl))
    _warn_skipped(skipped, {node.service for node, _ in rows}, service is None, prefix)
    return sorted(rows, key=lambda row: (row[0].service, row[0].version, row[0].id))


def _warn_skipped(
    skipped: dict[str, list[RecordError]], services: set[str], every: bool, prefix: str
) -> None:
    """One warning per bad record of a service (named, or holding a good record); listing
    every service, the keys beside no record at all are another application's, most likely:
    one line for them all, not one "bad registry record" each."""
    foreign: list[str] = []
    for name, errors in skipped.items():
        if every and name not in services:
            foreign += [error.key for error in errors]
            continue
        for error in errors:
            click.echo(f"warning: skipping {error}", err=True)
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else ""
        )
        click.echo(
            f"warning: skipping {len(foreign)} key{'s' if len(foreign) > 1 else ''} under "
            f"{prefix} beside no registry record (another application's? --root narrows "
            f"ls; 'ls SERVICE' says what is wrong with each): {shown}",
            err=True,
        )


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _metadata_text(node: Node) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(node.metadata.items())) or "-"


@click.command(name="ls")
@click.argument("service", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node.")
@click.pass_obj
def list_nodes(opts: Options, service: str | None, as_json: bool) -> None:
    """List registered nodes: of SERVICE, or of every service."""
    with friendly_errors():
        if service is not None:
            validate_dotted(service)
        rows = read_nodes(opts, service)
    if as_json:
        for node, ttl in rows:
            click.echo(json.dumps(_node_json(node, ttl)))
        return
    if not rows:
        click.echo(f"no nodes registered under {service or 'the root'}", err=True)
        return
    click.echo(nodes_table(rows, one_service=service is not None))


def nodes_table(rows: Sequence[tuple[Node, int]], *, one_service: bool = False) -> str:
    """``grpc-etcd ls``'s table of ``(node, ttl left)`` rows, in their order; ``one_service``
    drops SERVICE."""
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
        for node, ttl in rows
    ]
    if one_service:  # its name would repeat on every line
        header, body = header[1:], [row[1:] for row in body]
    return format_table([header, *body])


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


def _count(nodes: int) -> str:
    return f"{nodes} node" if nodes == 1 else f"{nodes} nodes"


def format_change(snapshot: Snapshot) -> list[str]:
    """Lines describing what ``snapshot`` changed: ``+`` added, ``-`` removed, ``~`` updated."""
    lines = []
    for mark, nodes in (("+", snapshot.added), ("~", snapshot.updated), ("-", snapshot.removed)):
        for node in nodes:
            lines.append(
                f"{mark} {node.id}  {node.version or '-'}  {node.address}  {_metadata_text(node)}"
                f"  (rev {snapshot.revision}, {_count(len(snapshot))})"
            )
    return lines


@click.command()
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change.")
@click.pass_obj
def watch(opts: Options, service: str, as_json: bool) -> None:
    """Print one line per change of SERVICE's nodes until Ctrl-C.

    When etcd stops answering, one line says the view may be stale; one more when it is back.
    """
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            click.echo(line)

    def on_liveness(error: str | None) -> None:
        if as_json:
            say(json.dumps({"stale": error is not None, "error": error}))
        elif error is not None:
            say(f"! etcd is not answering ({error}): the nodes shown may be stale")
        else:
            say("! etcd answers again: changes follow")

    with contextlib.suppress(KeyboardInterrupt), friendly_errors():  # Ctrl-C: a clean stop
        validate_dotted(service)
        with (
            opts.registry() as reg,
            opts.client() as probe_client,
            Liveness(probe_client, on_liveness) as liveness,
        ):
            check_readable(reg, service)
            snapshots = reg.watch(service)
            try:
                for snapshot in snapshots:
                    liveness.answered()  # said before the change it brings
                    for line in _change_lines(snapshot, as_json):
                        say(line)
            finally:
                close = getattr(snapshots, "close", None)
                if close is not None:
                    close()


def _change_lines(snapshot: Snapshot, as_json: bool) -> list[str]:
    if not as_json:
        return format_change(snapshot) or [f"  no nodes (rev {snapshot.revision})"]
    change = {
        "revision": snapshot.revision,
        "added": [_node_json(n) for n in snapshot.added],
        "updated": [_node_json(n) for n in snapshot.updated],
        "removed": [_node_json(n) for n in snapshot.removed],
    }
    return [json.dumps(change)]
