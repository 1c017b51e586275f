"""``grpc-etcd etcd``: a throwaway etcd in the foreground, for trying things."""

from __future__ import annotations

import contextlib
import signal
import sys
import time

import click

from ._common import ENV_ENDPOINTS, friendly_errors

__all__ = ["etcd"]


@click.command()
@click.option("--port", default=0, help="Client port (0: a free one).")
def etcd(port: int) -> None:
    """Run a throwaway etcd on 127.0.0.1 until Ctrl-C (its data is deleted on exit)."""
    from ..testing import EtcdServer

    with friendly_errors(), EtcdServer(client_port=port or None) as server:
        click.echo(
            f"etcd {server.version} listening on {server.endpoint} (data in {server.data_dir})"
        )
        click.echo(f"try: {ENV_ENDPOINTS}={server.endpoint} grpc-etcd ls")
        click.echo("Ctrl-C to stop")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            while server.running:
                time.sleep(0.5)
