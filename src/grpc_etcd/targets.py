"""``etcd://`` target strings, for people who configure channels as strings (pure).

    etcd://127.0.0.1:2379/hwholiday.srv.app?policy=version&version=v1
    etcd://10.0.0.1:2379,10.0.0.2:2379/hwholiday.srv.app
    etcd://127.0.0.1:2379/foo/bar/my-service          (a raw etcd naming target)

Query parameters: ``policy`` (default ``version``), ``version`` (the channel's default
version), ``root`` (key prefix), ``timeout`` (seconds per etcd request).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .naming import validate_service
from .node import parse_address

__all__ = ["Target", "parse_target"]

_KNOWN = {"policy", "version", "root", "timeout"}


@dataclass(frozen=True, slots=True)
class Target:
    """What an ``etcd://`` target names."""

    endpoints: tuple[str, ...]
    service: str
    policy: str = "version"
    version: str | None = None
    root: str = ""
    timeout: float = 5.0


def parse_target(target: str) -> Target:
    """Parse ``etcd://HOST:PORT[,HOST:PORT...]/SERVICE[?policy=...&version=...]``."""
    parts = urlsplit(target)
    if parts.scheme != "etcd":
        raise ValueError(f"target {target!r} must start with etcd://")
    endpoints = tuple(e for e in parts.netloc.split(",") if e)
    if not endpoints:
        raise ValueError(f"target {target!r} names no etcd endpoint (etcd://HOST:PORT/SERVICE)")
    for endpoint in endpoints:
        parse_address(endpoint)
    service = unquote(parts.path.lstrip("/"))
    if not service:
        raise ValueError(f"target {target!r} names no service (etcd://HOST:PORT/SERVICE)")
    validate_service(service)
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - _KNOWN
    if unknown:
        raise ValueError(
            f"target {target!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    values = {key: vals[-1] for key, vals in query.items()}
    try:
        timeout = float(values.get("timeout", 5.0))
    except ValueError:
        raise ValueError(f"target {target!r}: timeout must be a number of seconds") from None
    return Target(
        endpoints=endpoints,
        service=service,
        policy=values.get("policy") or "version",
        version=values.get("version") or None,
        root=values.get("root", ""),
        timeout=timeout,
    )
