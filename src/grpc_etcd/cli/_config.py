"""``grpc-etcd config ...`` and ``grpc-etcd route set``: a service's routing document in etcd.

Every channel of the service watches the document at ``<root>/grpc-etcd/config/<service>``
(docs/routing.md), so a write here changes how every client routes, within a second, no restart.
Nothing is written that does not validate: a refused document is one line saying what is wrong
and where, and the stored one stays as it was.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click

from ..config import config_json_schema, config_key, parse_config
from ..errors import ConfigError
from ._common import Options, friendly_errors, validate_cli_service

__all__ = ["config", "parse_fallback", "parse_split", "route"]


@click.group()
def config() -> None:
    """Show, set or delete a service's routing document (docs/routing.md)."""


def _key(opts: Options, service: str) -> str:
    return config_key(validate_cli_service(service), opts.root)


def _stored(opts: Options, key: str) -> dict[str, Any] | None:
    """The JSON object stored at ``key``; ``None`` when nothing is; refused when it is not JSON."""
    with opts.client() as client:
        kv = client.get(key)
    if kv is None:
        return None
    replace = "'grpc-etcd config set' (a whole document) or 'config delete' replaces it"
    try:
        document = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError) as exc:
        fault = f"the stored document is not valid JSON ({exc}); {replace}"
        raise ConfigError(key, fault) from None
    if not isinstance(document, dict):
        raise ConfigError(key, f"the stored document is not a JSON object; {replace}")
    return document


def _write(opts: Options, key: str, document: dict[str, Any]) -> int:
    """Validate ``document`` (refused: nothing written), then store it; its revision."""
    parse_config(document, key=key)
    with opts.client() as client:
        return client.put(key, json.dumps(document, separators=(",", ":")))


@config.command(name="show")
@click.argument("service")
@click.pass_obj
def show(opts: Options, service: str) -> None:
    """Print SERVICE's stored document as JSON (exit 1 when none is stored)."""
    with friendly_errors():
        key = _key(opts, service)
        with opts.client() as client:
            kv = client.get(key)
        if kv is None:
            raise click.ClickException(f"no config stored for {service} (at {key})")
        text = kv.value.decode("utf-8", "replace")
        try:
            click.echo(json.dumps(json.loads(text), indent=2))
        except ValueError:
            click.echo(text)
        try:
            parse_config(kv.value, key=key)
        except ConfigError as exc:  # clients ignore it and keep their last good one
            click.echo(f"warning: clients ignore it: {exc}", err=True)


@config.command(name="set")
@click.argument("service")
@click.argument("file", type=click.File("rb"))
@click.pass_obj
def set_config(opts: Options, service: str, file: IO[bytes]) -> None:
    """Store FILE (a JSON document; - reads stdin) as SERVICE's config, once it validates."""
    with friendly_errors():
        key = _key(opts, service)
        name = getattr(file, "name", "-")
        source = "stdin" if name in ("-", "<stdin>") else str(name)
        data = file.read()
        parse_config(data, key=source)  # refused here: nothing is written
        # Stored as written (keys, durations), so `config show` prints what was set.
        revision = _write(opts, key, json.loads(data))
        click.echo(f"stored {service}'s config at {key} (revision {revision})")


@config.command(name="delete")
@click.argument("service")
@click.pass_obj
def delete(opts: Options, service: str) -> None:
    """Delete SERVICE's stored config: its channels go back to the config in their code."""
    with friendly_errors():
        key = _key(opts, service)
        with opts.client() as client:
            deleted = client.delete(key)
        click.echo(f"deleted {key}" if deleted else f"no config stored for {service} (at {key})")


@config.command(name="schema")
def schema() -> None:
    """Print the document's JSON Schema (for editors and linters)."""
    click.echo(json.dumps(config_json_schema(), indent=2))


@click.group()
def route() -> None:
    """Shortcuts that edit one part of a service's config."""


def parse_split(text: str) -> list[dict[str, Any]]:
    """``"v1=90,v2=10"`` -> the ``to`` list of a route: one version subset per share."""
    to: list[dict[str, Any]] = []
    for item in (part.strip() for part in text.split(",")):
        version, sep, weight = item.partition("=")
        if not sep or not version.strip() or not weight.strip():
            raise ValueError(f"--split: {item!r} is not VERSION=WEIGHT (e.g. v1=90,v2=10)")
        if not weight.strip().isdigit():
            raise ValueError(f"--split: {item!r}: a weight is an integer >= 0, got {weight!r}")
        to.append({"subset": {"version": version.strip()}, "weight": int(weight)})
    versions = [part["subset"]["version"] for part in to]
    if len(set(versions)) != len(versions):
        raise ValueError(f"--split names a version twice: {text!r}")
    return to


def parse_fallback(text: str) -> list[dict[str, str]]:
    """``"version=stable,any"`` -> ``[{"version": "stable"}, {}]`` (``any``: every node)."""
    selectors: list[dict[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if item == "any":
            selectors.append({})
            continue
        label, sep, value = item.partition("=")
        if not sep or not label.strip() or not value.strip():
            raise ValueError(f"--fallback: {item!r} is not LABEL=VALUE or 'any'")
        selectors.append({label.strip(): value.strip()})
    return selectors


@route.command(name="set")
@click.argument("service")
@click.option("--split", help="Shares of the calls by version: v1=90,v2=10 (rewrites routes).")
@click.option(
    "--fallback", help="Where calls go when their subset has no node: version=stable,any."
)
@click.pass_obj
def set_route(opts: Options, service: str, split: str | None, fallback: str | None) -> None:
    """Set SERVICE's split by version and/or fallback; the config's other keys are kept."""
    with friendly_errors():
        if split is None and fallback is None:
            raise ValueError("give --split, --fallback or both")
        key = _key(opts, service)
        document = dict(_stored(opts, key) or {})
        replaced = document.get("routes", [])
        if split is not None:
            document["routes"] = [{"to": parse_split(split)}]
        if fallback is not None:
            document["fallback"] = parse_fallback(fallback)
        revision = _write(opts, key, document)
        click.echo(f"stored {service}'s config at {key} (revision {revision})")
        click.echo(f"  {_describe(document)}")
        with_match = [r for r in replaced if isinstance(r, dict) and r.get("match")]
        if split is not None and with_match:
            click.echo(f"  (replaced {len(replaced)} routes, {len(with_match)} with a match)")


def _describe(document: dict[str, Any]) -> str:
    parts = []
    routes = document.get("routes", [])
    if routes:
        to = routes[-1].get("to", [])
        total = sum(part.get("weight", 1) for part in to) or 1
        shares = ", ".join(
            f"{'+'.join(f'{k}={v}' for k, v in part['subset'].items()) or 'any'} "
            f"{100 * part.get('weight', 1) / total:g}%"
            for part in to
        )
        parts.append(f"split: {shares}")
    if "fallback" in document:
        chain = " then ".join(
            "+".join(f"{k}={v}" for k, v in sel.items()) or "any" for sel in document["fallback"]
        )
        parts.append(f"fallback: {chain or 'none'}")
    return "; ".join(parts)
