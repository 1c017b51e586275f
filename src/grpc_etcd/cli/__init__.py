"""The ``grpc-etcd`` command: a local etcd, the registered nodes, a service's routing, xDS.

    grpc-etcd etcd                      # a throwaway etcd in the foreground (for trying things)
    grpc-etcd ls [SERVICE] [--json]     # id, version, address, metadata, lease TTL left
    grpc-etcd watch SERVICE             # one line per change
    grpc-etcd top SERVICE               # a live table of the nodes (the cli extra)
    grpc-etcd config show|set|check|history|rollback|delete|schema ...   # docs/routing.md
    grpc-etcd route set SERVICE --split v1=90,v2=10   # a canary split, live on every client
    grpc-etcd xds --listen HOST:PORT    # an xDS control plane fed by etcd (the xds extra)
    grpc-etcd --user root acl grant SERVICE --server USER   # least-privilege etcd roles

``--etcd HOST:PORT[,HOST:PORT...]`` or ``GRPC_ETCD_ENDPOINTS`` chooses the cluster.
Errors are one line on stderr and exit status 1, never a traceback.

Each command group lives in its own module, named in ``COMMANDS`` and imported only when that
command runs (or ``--help`` lists it), so a module must keep heavy or optional imports (an extra's
packages) inside its functions. A new group is one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from ._common import DEFAULT_ENDPOINT, ENV_ENDPOINTS, ENV_PASSWORD, Options
from ._nodes import format_change, format_table

__all__ = ["COMMANDS", "format_change", "format_table", "main"]

#: command name -> "module:attribute" (relative to this package) of its click command.
COMMANDS: dict[str, str] = {
    "acl": "._acl:acl",
    "config": "._config:config",
    "etcd": "._etcd:etcd",
    "ls": "._nodes:list_nodes",
    "route": "._config:route",
    "top": "._top:top",
    "watch": "._nodes:watch",
    "xds": "..xds._cli:xds",
}


# click >= 8.2 raises this for a group called with nothing; older clicks print the help.
_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.UsageError,), {})
)


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use (keeps ``--help`` and start-up fast).

    A usage error (a missing argument, an unknown option) is one line and exit status 1, like
    every other error of the command, instead of click's usage block and status 2.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            super().main(args, prog_name, complete_var, False, **extra)
        except _NoArgsIsHelp as exc:  # `grpc-etcd` or `grpc-etcd config` alone: the help
            click.echo(exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attr = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module_name, __name__), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--etcd",
    "endpoints",
    envvar=ENV_ENDPOINTS,
    default=DEFAULT_ENDPOINT,
    show_default=True,
    help=f"etcd endpoints, comma-separated: HOST[:PORT], [IPV6]:PORT, ::1, https://HOST:PORT "
    f"(or ${ENV_ENDPOINTS}).",
)
@click.option("--root", default="", help="Key prefix every service lives under.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per etcd request.")
@click.option("--user", default=None, help="etcd user name (with --password).")
@click.option(
    "--password", envvar=ENV_PASSWORD, default=None, help=f"etcd password (or ${ENV_PASSWORD})."
)
@click.option("--cacert", default=None, help="CA bundle (PEM) that signed etcd's certificate.")
@click.option("--cert", default=None, help="Client certificate (PEM) for mutual TLS.")
@click.option("--key", default=None, help="Private key (PEM) of --cert.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.version_option(package_name="grpc-etcd")
@click.pass_context
def main(
    ctx: click.Context,
    endpoints: str,
    root: str,
    timeout: float,
    user: str | None,
    password: str | None,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    verbose: bool,
) -> None:
    """Register gRPC servers in etcd, discover them, balance calls across them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Options(endpoints, root, timeout, user, password, cacert, cert, key, verbose)
