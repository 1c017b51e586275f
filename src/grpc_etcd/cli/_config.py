"""``grpc-etcd config ...`` and ``grpc-etcd route set``: a service's routing document in etcd.

Every channel of the service watches the document at ``<root>/grpc-etcd/config/<service>``
(docs/routing.md), so a write here changes how every client routes, within a second, no restart.
Nothing is written that does not validate, nor (without ``--force``) a document whose selectors
miss the nodes registered now (:mod:`grpc_etcd.checks`): a refused document is one line saying
what is wrong and where, and the stored one stays as it was. ``--dry-run`` shows where the
calls would go, before and after, and writes nothing.

etcd keeps every version of the key until it compacts its history: ``config history`` lists
them (by revision: etcd records no time of a write) and ``config rollback`` stores one again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

import click

from .._strict_json import loads_strict
from ..checks import Finding, Share, check_config, shares
from ..config import ServiceConfig, config_json_schema, config_key, parse_config
from ..errors import CompactedError, ConfigError, EtcdError, EtcdUnavailableError
from ..naming import service_prefix, validate_dotted
from ..node import Node, check_version
from ..registry.etcd import EtcdClient, KeyValue
from ..snapshot import Snapshot, snapshot_from_kvs
from ._common import Options, friendly_errors, one_line
from ._nodes import format_table

__all__ = ["config", "parse_fallback", "parse_split", "route", "share_lines", "summary"]

_REPLACE = "'grpc-etcd config set' (a whole document) or 'config delete' replaces it"
_FORCE = "--force stores it anyway"
_MAX_REVISION = 2**63 - 1


@click.group()
def config() -> None:
    """Show, set, check or delete a service's routing document (docs/routing.md); list its
    history and roll it back."""


def _key(opts: Options, service: str) -> str:
    return config_key(validate_dotted(service), opts.root)


def _document(kv: KeyValue | None, key: str) -> dict[str, Any] | None:
    """The JSON object of a stored ``kv``; ``None`` when nothing is; refused when not JSON."""
    if kv is None:
        return None
    try:
        document = loads_strict(kv.value)
    except ValueError as exc:
        fault = f"the stored document is {exc}; {_REPLACE}"
        raise ConfigError(key, fault) from None
    if not isinstance(document, dict):
        raise ConfigError(key, f"the stored document is not a JSON object; {_REPLACE}")
    return document


def _nodes(client: EtcdClient, service: str, root: str) -> Snapshot:
    """The nodes of ``service`` registered now (records that don't decode are left out, as
    every channel leaves them out)."""
    kvs, revision = client.get_prefix(service_prefix(service, root))
    raw = [(kv.key.decode("utf-8", "replace"), kv.value) for kv in kvs]
    snapshot, _ = snapshot_from_kvs(service, raw, revision)
    return snapshot


def _in_force(kv: KeyValue | None) -> ServiceConfig:
    """The config clients follow from ``kv``: its document, or ``{}`` when there is none or
    they ignore it (an invalid one; they keep their last good one, unknown here)."""
    if kv is None:
        return ServiceConfig()
    try:
        return parse_config(kv.value)
    except ConfigError:
        return ServiceConfig()


@dataclass(frozen=True)
class _Write:
    """A document about to be stored for a service, and how to store it."""

    service: str
    key: str
    document: dict[str, Any]
    force: bool
    dry_run: bool


def _store(opts: Options, client: EtcdClient, write: _Write, current: KeyValue | None) -> int:
    """Check ``write`` against the registry; refuse it (one line), show it (dry run), or
    store it. The revision written, or 0 for a dry run."""
    config = parse_config(write.document, key=write.key)
    nodes = _nodes(client, write.service, opts.root)
    findings = check_config(config, nodes)
    if write.dry_run:
        click.echo(f"dry run: nothing written to {write.key}")
        before = shares(_in_force(current), nodes)
        click.echo(format_table(share_lines(before, shares(config, nodes))))
    if findings and not write.force:
        raise click.ClickException(_refusal(findings))
    forced = "with --force, stored despite" if write.dry_run else "stored anyway (--force)"
    for finding in findings:
        click.echo(f"warning: {forced}: {finding}", err=True)
    if write.dry_run:
        return 0
    # Stored compact, keys and durations as written, so `config show` prints what was set;
    # only over the document read above, so a write made meanwhile by someone else is not lost.
    text = json.dumps(write.document, separators=(",", ":"))
    read = current.mod_revision if current is not None else 0
    revision = client.put_if_unchanged(write.key, text, mod_revision=read)
    if not revision:
        raise click.ClickException(
            f"{write.service}'s config changed while this ran (someone else wrote it): "
            "nothing written; run it again"
        )
    return revision


def _refusal(findings: Sequence[Finding], force: str = f" ({_FORCE})") -> str:
    return f"refused: {'; '.join(str(f) for f in findings)}{force}"


def _force_and_dry_run(command: Any) -> Any:
    command = click.option(
        "--dry-run",
        is_flag=True,
        help="Print the share of calls each subset gets, before and after; write nothing.",
    )(command)
    return click.option(
        "--force",
        is_flag=True,
        help="Store it even if a selector matches no registered node (a version to come).",
    )(command)


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
            click.echo(json.dumps(loads_strict(text), indent=2))
        except ValueError:  # clients ignore it (warned below): as it is stored
            click.echo(text)
        try:
            parse_config(kv.value, key=key)
        except ConfigError as exc:  # clients ignore it and keep their last good one
            click.echo(f"warning: clients ignore it: {exc}", err=True)


def _read_file(file: IO[bytes]) -> tuple[str, dict[str, Any]]:
    """FILE's name as said in errors, and its document once it validates."""
    name = getattr(file, "name", "-")
    source = "stdin" if name in ("-", "<stdin>") else str(name)
    data = file.read()
    parse_config(data, key=source)  # refused here: nothing is written
    document = json.loads(data, object_pairs_hook=_once_each(source))
    assert isinstance(document, dict)  # parse_config refuses anything else
    return source, document


def _once_each(source: str) -> Any:
    """A ``json`` object hook refusing a key given twice in one object: JSON readers keep
    the last ({"routes": [...], "routes": []} has no route), which the writer rarely meant."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                raise ConfigError(source, f"key {name!r} is given twice in one object")
            seen.add(name)
        return dict(items)

    return pairs


@config.command(name="set")
@click.argument("service")
@click.argument("file", type=click.File("rb"))
@_force_and_dry_run
@click.pass_obj
def set_config(opts: Options, service: str, file: IO[bytes], force: bool, dry_run: bool) -> None:
    """Store FILE (a JSON document; - reads stdin) as SERVICE's config, once it validates and
    its selectors match registered nodes."""
    with friendly_errors():
        key = _key(opts, service)
        _, document = _read_file(file)
        with opts.client() as client:
            write = _Write(service, key, document, force, dry_run)
            revision = _store(opts, client, write, client.get(key))
        if revision:
            click.echo(f"stored {service}'s config at {key} (revision {revision})")
            click.echo(f"  {summary(document)}")


@config.command(name="check")
@click.argument("file", type=click.File("rb"))
@click.option("--service", required=True, help="The service whose nodes the document must fit.")
@click.pass_obj
def check(opts: Options, file: IO[bytes], service: str) -> None:
    """Check FILE as `config set` would, and store nothing: for a pipeline.

    Exit status 0: the document validates and its selectors match SERVICE's registered nodes
    (or etcd could not be reached: then the schema alone was checked, and a warning says so).
    Exit status 1: it does not validate, a selector misses the registry, or etcd refused the
    read (one line).
    """
    with friendly_errors():
        validate_dotted(service)
        source, document = _read_file(file)
        try:
            with opts.client() as client:
                nodes = _nodes(client, service, opts.root)
        except (EtcdUnavailableError, OSError, TimeoutError) as exc:  # a refusal is an error
            click.echo(
                f"warning: etcd not reached ({one_line(exc)}): {source} checked against the schema "
                "only, not against the registered nodes",
                err=True,
            )
            click.echo(f"{source}: valid (schema only)")
            return
        findings = check_config(document, nodes)
        if findings:
            raise click.ClickException(f"{source}: {_refusal(findings, '')}")
        click.echo(f"{source}: valid, and fits the {len(nodes)} registered nodes of {service}")


@config.command(name="delete")
@click.argument("service")
@click.pass_obj
def delete(opts: Options, service: str) -> None:
    """Delete SERVICE's stored config: its channels go back to the config in their code."""
    with friendly_errors():
        key = _key(opts, service)
        with opts.client() as client:
            stored = client.get(key)  # etcd lists no versions of a deleted key: say its revision
            deleted = client.delete(key)
        if not deleted:
            click.echo(f"no config stored for {service} (at {key})")
            return
        click.echo(f"deleted {key}")
        if stored is not None:
            command = f"grpc-etcd config rollback {service} --to {stored.mod_revision}"
            click.echo(f"  '{command}' stores it again")


@config.command(name="schema")
def schema() -> None:
    """Print the document's JSON Schema (for editors and linters)."""
    click.echo(json.dumps(config_json_schema(), indent=2))


# ---------------------------------------------------------------- history


def _versions(client: EtcdClient, key: str, limit: int) -> Iterator[KeyValue | str]:
    """The stored versions of ``key``, newest first, then (as a str) why the list ends.

    etcd has no list of a key's versions: each one is read at the revision before the
    previous one's write (``mod_revision - 1``), back to the key's creation or to etcd's
    compaction, whichever comes first.
    """
    kv = client.get(key)
    if kv is None:  # etcd lists no versions of a deleted key: rollback reads one by revision
        yield (
            "no config is stored now; one from before a delete is stored again by "
            "'grpc-etcd config rollback SERVICE --to REVISION', a revision when it was in force"
        )
        return
    for _ in range(limit):
        yield kv
        if kv.version == 1:  # the first write since the key was created
            yield f"created at revision {kv.create_revision}"
            return
        try:
            earlier = client.get(key, revision=kv.mod_revision - 1)
        except CompactedError:
            yield f"etcd has compacted the history before revision {kv.mod_revision}"
            return
        if earlier is None:  # pragma: no cover - version > 1 says there is one
            return
        kv = earlier
    yield f"the {limit} newest shown (--limit)"


def summary(raw: bytes | str | Mapping[str, Any]) -> str:
    """One line saying what a document does (its policy, split, fallback, other keys): what
    ``config history`` lists and a write prints."""
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        return f"invalid, clients ignore it: {exc.reason}"
    parts = []
    if config.load_balancing_config:
        parts.append(f"policy: {config.policy_name}")
    for route in config.routes:
        total = sum(part.weight for part in route.to) or 1
        split = ", ".join(
            f"{_labels(part.subset)} {100 * part.weight / total:g}%" for part in route.to
        )
        match = route.match.model_dump(exclude_defaults=True)
        parts.append(f"{'route ' + json.dumps(match) if match else 'split'}: {split}")
    if config.fallback:
        parts.append("fallback: " + " then ".join(_labels(f) for f in config.fallback))
    rest = sorted(
        field.alias or name
        for name, field in ServiceConfig.model_fields.items()
        if name in config.model_fields_set
        and name not in ("load_balancing_config", "routes", "fallback")
    )
    parts += [", ".join(rest)] if rest else []
    return "; ".join(parts) or "{} (the default: any node, at random)"


def _labels(labels: Any) -> str:
    items = labels.items() if hasattr(labels, "items") else labels
    return "+".join(f"{k}={v}" for k, v in items) or "any"


@config.command(name="history")
@click.argument("service")
@click.option("--limit", default=20, show_default=True, help="How many versions to list.")
@click.pass_obj
def history(opts: Options, service: str, limit: int) -> None:
    """List SERVICE's stored documents, newest first: revision and what each one does.

    etcd keeps every version until it compacts its history, and records no time of a write:
    the revisions order them (`config rollback --to REVISION` stores one again).
    """
    with friendly_errors():
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        key = _key(opts, service)
        rows = [["REVISION", "SUMMARY"]]
        with opts.client() as client:
            for item in _versions(client, key, limit):
                if isinstance(item, str):
                    ending = item
                    break
                mark = "  (now)" if len(rows) == 1 else ""
                rows.append([str(item.mod_revision), summary(item.value) + mark])
        if len(rows) > 1:
            click.echo(format_table(rows))
        click.echo(f"({ending}; etcd records no time of a write)")


@config.command(name="rollback")
@click.argument("service")
@click.option(
    "--to",
    "revision",
    type=int,
    default=None,
    help="Store the document as it was at this revision (default: the one before now).",
)
@_force_and_dry_run
@click.pass_obj
def rollback(opts: Options, service: str, revision: int | None, force: bool, dry_run: bool) -> None:
    """Store an earlier document of SERVICE again: the one before the current by default.

    It is checked as `config set` checks a new one. A revision etcd has compacted away is
    gone: `config history` lists the ones left.
    """
    with friendly_errors():
        key = _key(opts, service)
        with opts.client() as client:
            current = client.get(key)
            if revision is None:
                if current is None:
                    raise ValueError(
                        f"no config stored for {service} now: give --to REVISION "
                        "(a revision when the document you want was in force)"
                    )
                if current.version == 1:
                    raise ValueError(
                        f"{service}'s config has no earlier version: it was created at "
                        f"revision {current.create_revision} (an earlier one, before a "
                        "delete, is reached with --to REVISION)"
                    )
                revision = current.mod_revision - 1
            earlier = _at(client, key, service, revision)
            try:
                document = _document(earlier, key)
            except ConfigError:
                raise click.ClickException(
                    f"the document of revision {earlier.mod_revision} is not a JSON object "
                    "(clients ignored it): pick another in 'grpc-etcd config history'"
                ) from None
            assert document is not None
            write = _Write(service, key, document, force, dry_run)
            written = _store(opts, client, write, current)
        if written:
            click.echo(
                f"stored {service}'s config of revision {earlier.mod_revision} again at "
                f"{key} (revision {written})"
            )
            click.echo(f"  {summary(earlier.value)}")


def _at(client: EtcdClient, key: str, service: str, revision: int) -> KeyValue:
    """The stored document in force at ``revision``, or one line saying why there is none."""
    if revision < 1:
        raise ValueError(f"--to must be a revision >= 1, got {revision}")
    if revision > _MAX_REVISION:  # etcd's are int64: protobuf said "Value out of range"
        raise click.ClickException(f"etcd has not reached revision {revision} yet")
    try:
        kv = client.get(key, revision=revision)
    except CompactedError:
        raise click.ClickException(
            f"etcd has compacted revision {revision} away: {service}'s config of then is "
            f"gone ('grpc-etcd config history {service}' lists the versions left)"
        ) from None
    except EtcdError as exc:
        if "future revision" in str(exc):
            raise click.ClickException(f"etcd has not reached revision {revision} yet") from None
        raise
    if kv is None:
        raise click.ClickException(f"no config was stored for {service} at revision {revision}")
    return kv


# ---------------------------------------------------------------- dry run


def share_lines(before: Sequence[Share], after: Sequence[Share]) -> list[list[str]]:
    """The dry run's table: per kind of call, each subset's share before and after, and the
    nodes in it now (first row: the header). The calls no route matches, last in both lists,
    are one kind (``other calls`` beside a route with a match, else ``calls that name no
    version``): the name ``after`` gives them. A kind one side does not list went, on a side
    with no route that matches (one kind only), where all of that side's calls went."""
    rows = [["", "BEFORE", "AFTER", "NODES"]]
    if before and after:  # the last kind is the calls no route matches: one name for both
        rest = before[-1].calls
        before = [replace(s, calls=after[-1].calls) if s.calls == rest else s for s in before]
    kinds = list(dict.fromkeys([s.calls for s in after] + [s.calls for s in before]))
    for kind in kinds:
        rows.append([f"{kind}:", "", "", ""])
        was = {(s.asked, s.subset): s for s in _of_kind(before, kind)}
        now = {(s.asked, s.subset): s for s in _of_kind(after, kind)}
        for place in dict.fromkeys([*now, *was]):
            share = now.get(place) or was[place]
            rows.append(
                [
                    f"  {_where_to(share)}",
                    _percent(was.get(place)),
                    _percent(now.get(place)),
                    _node_list(share.nodes),
                ]
            )
    return rows


def _of_kind(side: Sequence[Share], kind: str) -> list[Share]:
    """The shares of ``kind``'s calls on ``side``; when ``side`` lists no such kind and has
    no route with a match (one kind), its calls of that kind went where all its calls went."""
    listed = [s for s in side if s.calls == kind]
    if not listed and len({s.calls for s in side}) == 1:
        return list(side)
    return listed


def _where_to(share: Share) -> str:
    asked = _labels(share.asked)
    if share.subset is None:
        return f"{asked} -> no node: fails (UNAVAILABLE)"
    if share.subset != share.asked:
        return f"{asked} -> fallback {_labels(share.subset)}"
    return asked


def _percent(share: Share | None) -> str:
    return f"{100 * share.share:.3g}%" if share is not None else "0%"


def _node_list(nodes: Sequence[Node], most: int = 4) -> str:
    if not nodes:
        return "-"
    names = ", ".join(node.id for node in nodes[:most])
    more = f" (+{len(nodes) - most} more)" if len(nodes) > most else ""
    return f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}: {names}{more}"


# ---------------------------------------------------------------- route set


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
        if not (weight.strip().isascii() and weight.strip().isdigit()):  # not '²', '٣'
            raise ValueError(f"--split: {item!r}: a weight is an integer >= 0, got {weight!r}")
        try:  # a version no server can register with ('v1 x') would be a share that fails
            check_version(version.strip())
        except ValueError as exc:
            raise ValueError(f"--split: {item!r}: {exc}") from None
        to.append({"subset": {"version": version.strip()}, "weight": int(weight)})
    versions = [part["subset"]["version"] for part in to]
    if len(set(versions)) != len(versions):
        raise ValueError(f"--split names a version twice: {text!r}")
    try:  # the weights as a whole (none above 0, too many): said of --split, not of the key
        parse_config({"routes": [{"to": to}]})
    except ConfigError as exc:
        raise ValueError(f"--split {text!r}: {exc.reason.removeprefix('routes[0].to: ')}") from None
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
@_force_and_dry_run
@click.pass_obj
def set_route(
    opts: Options,
    service: str,
    split: str | None,
    fallback: str | None,
    force: bool,
    dry_run: bool,
) -> None:
    """Set SERVICE's split by version and/or fallback; the config's other keys are kept."""
    with friendly_errors():
        if split is None and fallback is None:
            raise ValueError("give --split, --fallback or both")
        key = _key(opts, service)
        to = parse_split(split) if split is not None else None
        chain = parse_fallback(fallback) if fallback is not None else None
        with opts.client() as client:
            current = client.get(key)
            document = dict(_document(current, key) or {})
            replaced = document.get("routes", [])
            if to is not None:
                document["routes"] = [{"to": to}]
            if chain is not None:
                document["fallback"] = chain
            write = _Write(service, key, document, force, dry_run)
            revision = _store(opts, client, write, current)
        if not revision:
            return
        click.echo(f"stored {service}'s config at {key} (revision {revision})")
        click.echo(f"  {summary(document)}")
        with_match = [r for r in replaced if isinstance(r, dict) and r.get("match")]
        if split is not None and with_match:
            click.echo(f"  (replaced {len(replaced)} routes, {len(with_match)} with a match)")
