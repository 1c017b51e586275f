"""``grpc-etcd xds``: run the control plane, or print a client's bootstrap.

grpc-etcd xds --listen 127.0.0.1:18000 [--services a.srv.app,b.srv.app]
grpc-etcd xds --listen 10.0.0.5:18000 --cert plane.crt --key plane.key [--cacert clients-ca.crt]
grpc-etcd xds bootstrap --server 127.0.0.1:18000 [--source version=v2,...] [--zone a]
grpc-etcd xds bootstrap --server 10.0.0.5:18000 --cacert ca.crt [--cert c.crt --key c.key]

The control plane's --cert/--key/--cacert are its own (after ``xds``); etcd's TLS stays the
global options before it (``grpc-etcd --cacert etcd-ca.crt xds ...``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from ..allowlist import allow_list
from ..cli._common import Options, friendly_errors
from ..naming import validate_dotted
from ..registry.etcd import TLSConfig
from .bootstrap import DEFAULT_NODE_ID, bootstrap_json, parse_labels

__all__ = ["xds"]


def _services(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [validate_dotted(part.strip()) for part in text.split(",") if part.strip()]


async def _serve(
    opts: Options,
    listen: str,
    services: list[str] | None,
    allow: list[str] | None,
    tls: TLSConfig | None,
) -> None:
    from ._plane import ControlPlane

    async with opts.async_client() as client:
        plane = ControlPlane(
            client, services=services, listen=listen, root=opts.root, allow=allow, tls=tls
        )
        await plane.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        click.echo(f"xDS control plane listening on {plane.address} ({plane.security})")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await plane.close(grace=0.5)


@click.group(name="xds", invoke_without_command=True)
@click.option("--listen", default="127.0.0.1:18000", show_default=True, help="ADS address.")
@click.option("--services", default=None, help="Serve only these (comma-separated).")
@click.option(
    "--allow", default=None, help="Only nodes in these networks: 10.0.0.0/8,127.0.0.1/32."
)
@click.option("--cert", default=None, help="Serve TLS with this certificate (PEM)...")
@click.option("--key", default=None, help="...and its private key (PEM).")
@click.option(
    "--cacert", default=None, help="Mutual TLS: clients must show a certificate this CA signed."
)
@click.pass_context
def xds(
    ctx: click.Context,
    listen: str,
    services: str | None,
    allow: str | None,
    cert: str | None,
    key: str | None,
    cacert: str | None,
) -> None:
    """Serve etcd's services over xDS to unmodified gRPC clients (xds:///SERVICE)."""
    if ctx.invoked_subcommand is not None:
        return
    opts: Options = ctx.obj
    with friendly_errors():
        try:
            from ._plane import check_listen, server_credentials
        except ImportError:
            extra = "pip install 'grpc-etcd[xds]'"
            raise ValueError(f"grpc-etcd xds needs the xds extra: {extra}") from None
        check_listen(listen)
        tls = None
        if cert is not None or key is not None or cacert is not None:
            tls = TLSConfig(ca_file=cacert, cert_file=cert, key_file=key)
            server_credentials(tls)  # checks and reads the files: refused before etcd is dialed
        wanted = _services(services)
        networks = [part.strip() for part in allow.split(",") if part.strip()] if allow else None
        allow_list(networks)
        asyncio.run(_serve(opts, listen, wanted, networks, tls))


@xds.command()
@click.option("--server", required=True, help="HOST:PORT of the control plane.")
@click.option("--source", default="", help="The caller's labels: version=v2,service=app.")
@click.option("--zone", default="", help="The caller's locality zone.")
@click.option("--node-id", default=DEFAULT_NODE_ID, show_default=True, help="xDS node id.")
@click.option("--cacert", default=None, help="TLS: the CA that signed the control plane's cert.")
@click.option("--cert", default=None, help="Mutual TLS: the client's certificate (PEM)...")
@click.option("--key", default=None, help="...and its private key (PEM).")
def bootstrap(
    server: str,
    source: str,
    zone: str,
    node_id: str,
    cacert: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    """Print the bootstrap JSON for GRPC_XDS_BOOTSTRAP_CONFIG (TLS: gRFC A65's tls creds)."""
    with friendly_errors():
        text = bootstrap_json(
            server,
            source=parse_labels(source),
            node_id=node_id,
            zone=zone,
            cacert=cacert,
            cert=cert,
            key=key,
        )
        for flag, path in (("--cacert", cacert), ("--cert", cert), ("--key", key)):
            if path is not None and not os.path.isfile(path):  # a typo, or another machine's
                click.echo(
                    f"warning: {flag} {path}: no such file here; the client reads "
                    f"{os.path.abspath(path)} where it runs, and without it reaches no "
                    "control plane",
                    err=True,
                )
        click.echo(text)
