"""``grpc-etcd etcd``: a local etcd in the foreground, for trying things."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import time
from pathlib import Path

import click

from ._common import ENV_ENDPOINTS, friendly_errors

__all__ = ["choose_port", "etcd"]

#: The port ``Registry()`` and the CLI dial by default.
PREFERRED_PORT = 2379


def _port_free(port: int) -> bool:
    """Whether etcd could listen on 127.0.0.1:``port`` now (it binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def choose_port(explicit: int | None, preferred: int = PREFERRED_PORT) -> tuple[int, str | None]:
    """The client port to use, and a notice when ``preferred`` was taken and another chosen.

    An ``explicit`` port that is taken is an error (``ValueError``), never silently replaced.
    """
    if explicit is not None:
        if not _port_free(explicit):
            raise ValueError(f"127.0.0.1:{explicit} is taken; choose another --port")
        return explicit, None
    if _port_free(preferred):
        return preferred, None
    port = _any_free_port()
    return port, (
        f"127.0.0.1:{preferred} is taken (another etcd?), so this one uses 127.0.0.1:{port}: "
        f"point clients at it with {ENV_ENDPOINTS}=127.0.0.1:{port}"
    )


@click.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"Client port on 127.0.0.1 [default: {PREFERRED_PORT} if free, else a free one].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep etcd's data in this directory, to start again on it later "
    "[default: a temporary one, deleted on exit].",
)
def etcd(port: int | None, data_dir: Path | None) -> None:
    """Run a local etcd on 127.0.0.1 until Ctrl-C (for trying things, not for production)."""
    from ..testing import EtcdServer

    # Ctrl-C (or SIGTERM) at any moment, even while etcd starts, is a clean stop: exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), friendly_errors():
        client_port, notice = choose_port(port)
        if notice:
            click.echo(notice, err=True)
        with EtcdServer(client_port=client_port, data_dir=data_dir) as server:
            kept = "kept" if data_dir is not None else "deleted on exit"
            click.echo(
                f"etcd {server.version} listening on {server.endpoint} "
                f"(data in {server.data_dir}, {kept})"
            )
            click.echo(f"try: {ENV_ENDPOINTS}={server.endpoint} grpc-etcd ls")
            click.echo("Ctrl-C to stop")
            while server.running:
                time.sleep(0.5)
            raise click.ClickException(f"etcd exited on its own: {server.log_tail(1)}")
