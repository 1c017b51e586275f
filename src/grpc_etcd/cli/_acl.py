"""``grpc-etcd acl ...``: etcd roles that give each kind of user of a service exactly its job.

    grpc-etcd --user root acl grant a.srv.app --server srv --client web --operator ops
    grpc-etcd --user root acl grant a.srv.app --xds plane      # grpc-etcd xds's own user
    grpc-etcd --user root acl show a.srv.app
    grpc-etcd --user root acl revoke a.srv.app --client web

What each role holds is ``grpc_etcd.registry.acl``'s (and docs/security.md's) to say. Only
etcd's root may change roles: run these with ``--user root``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from ..errors import AuthError
from ..naming import validate_dotted
from ..registry.acl import KINDS, Kind, describe, permissions, plan, role_name
from ._common import Options, friendly_errors, one_line

if TYPE_CHECKING:
    from ..registry.etcd import EtcdClient

__all__ = ["acl"]


def _users(
    server: Sequence[str], client: Sequence[str], operator: Sequence[str], xds: Sequence[str]
) -> list[tuple[Kind, str]]:
    pairs: list[tuple[Kind, str]] = []
    for kind, users in zip(KINDS, (server, client, operator, xds), strict=True):
        for user in users:
            if not user.strip():
                raise ValueError(f"--{kind} needs a user name")
            pairs.append((kind, user.strip()))
    if not pairs:
        raise ValueError(
            "name at least one user: --server USER, --client USER, --operator USER or --xds USER"
        )
    return pairs


@contextlib.contextmanager
def _as_root() -> Iterator[None]:
    """Our errors as one line; a refusal also says who may manage roles."""
    with friendly_errors():
        try:
            yield
        except AuthError as exc:
            if exc.operation is None:  # no request refused: a wrong user name or password
                raise
            hint = "only etcd's root manages roles: --user root"
            raise AuthError(f"{one_line(exc)}; {hint}") from None


def _roles_of(client: EtcdClient, user: str, *, granting: bool) -> tuple[str, ...]:
    roles = client.user_get(user)
    if roles is None:
        hint = f": create it first (etcdctl user add {user})" if granting else ""
        raise ValueError(f"etcd has no user {user!r}{hint}")
    return roles


_USER_OPTIONS = [
    click.option("--server", multiple=True, metavar="USER", help="Registers SERVICE's servers."),
    click.option("--client", multiple=True, metavar="USER", help="Calls SERVICE (discovery)."),
    click.option("--operator", multiple=True, metavar="USER", help="Sets SERVICE's config."),
    click.option(
        "--xds", multiple=True, metavar="USER", help="Runs the control plane serving SERVICE."
    ),
]


def _with_users(command: Any) -> Any:
    for option in reversed(_USER_OPTIONS):
        command = option(command)
    return command


@click.group()
def acl() -> None:
    """Least-privilege etcd roles for a service's servers, clients, operators and the xDS
    control plane."""


@acl.command()
@click.argument("service")
@_with_users
@click.pass_obj
def grant(
    opts: Options,
    service: str,
    server: tuple[str, ...],
    client: tuple[str, ...],
    operator: tuple[str, ...],
    xds: tuple[str, ...],
) -> None:
    """Create or update SERVICE's role of each kind named and grant it to the users."""
    with _as_root():
        validate_dotted(service)
        pairs = _users(server, client, operator, xds)
        with opts.client() as etcd:
            for _, user in pairs:  # every user exists before anything changes
                _roles_of(etcd, user, granting=True)
            for kind in dict.fromkeys(kind for kind, _ in pairs):
                role = role_name(service, kind, opts.root)
                wanted = permissions(service, kind, opts.root)
                current = etcd.role_get(role)
                if current is None:
                    etcd.role_add(role)
                    current = ()
                changes = plan(current, wanted)
                for key, range_end in changes.revoke:
                    etcd.role_revoke_permission(role, key, range_end)
                for permission in changes.grant:
                    etcd.role_grant_permission(role, permission)
                state = "as it was" if changes.empty else "set"
                click.echo(f"{role} ({state}): {', '.join(describe(p) for p in wanted)}")
            for kind, user in pairs:
                role = role_name(service, kind, opts.root)
                etcd.user_grant_role(user, role)
                click.echo(f"granted {role} to {user}")
            if not _auth_enabled(etcd):
                click.echo(
                    "note: auth is not enabled on this etcd, so nothing is refused yet "
                    "(etcdctl auth enable)",
                    err=True,
                )


def _auth_enabled(etcd: EtcdClient) -> bool:
    from ..registry.etcd import EtcdError

    try:
        return etcd.auth_enabled()
    except EtcdError:  # etcd < 3.5 has no AuthStatus: it cannot tell
        return True


@acl.command()
@click.argument("service")
@_with_users
@click.pass_obj
def revoke(
    opts: Options,
    service: str,
    server: tuple[str, ...],
    client: tuple[str, ...],
    operator: tuple[str, ...],
    xds: tuple[str, ...],
) -> None:
    """Take SERVICE's role of each kind named back from the users (the roles stay)."""
    with _as_root():
        validate_dotted(service)
        pairs = _users(server, client, operator, xds)
        with opts.client() as etcd:
            held = {user: _roles_of(etcd, user, granting=False) for _, user in pairs}
            for kind, user in pairs:
                role = role_name(service, kind, opts.root)
                if role not in held[user]:
                    click.echo(f"{user} does not hold {role}")
                    continue
                etcd.user_revoke_role(user, role)
                click.echo(f"revoked {role} from {user}")


@acl.command()
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def show(opts: Options, service: str, as_json: bool) -> None:
    """List SERVICE's roles, what each may do, and the users that hold it."""
    with _as_root():
        validate_dotted(service)
        with opts.client() as etcd:
            roles = {kind: role_name(service, kind, opts.root) for kind in KINDS}
            held = {user: etcd.user_get(user) or () for user in etcd.user_list()}
            report: dict[str, dict[str, Any]] = {}
            for kind, role in roles.items():
                current = etcd.role_get(role)
                wanted = permissions(service, kind, opts.root)
                report[kind] = {
                    "role": role,
                    "exists": current is not None,
                    "permissions": [describe(p) for p in current or ()],
                    "as_granted": current is not None and plan(current, wanted).empty,
                    "users": sorted(user for user, has in held.items() if role in has),
                }
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        for name, entry in report.items():
            if not entry["exists"]:
                hint = f"grpc-etcd acl grant {service} --{name} USER"
                click.echo(f"{name:<9} {entry['role']}: not created ({hint})")
                continue
            users = ", ".join(entry["users"]) or "none"
            click.echo(f"{name:<9} {entry['role']}  users: {users}")
            for permission in entry["permissions"]:
                click.echo(f"          {permission}")
            if not entry["as_granted"]:
                click.echo(
                    "          (differs from what 'acl grant' sets: grant again to reset it)"
                )
