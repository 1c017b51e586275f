"""The one parser of etcd endpoints, for the client and the CLI alike (pure, no I/O).

An endpoint is ``HOST[:PORT]`` with an optional ``http://`` or ``https://`` in front and an
optional ``/`` after it; HOST is a DNS name, an IPv4 address, or an IPv6 address - in brackets
(``[::1]:2379``, ``[::1]``) or bare without a port (``::1``). The port defaults to 2379. Many
endpoints come as a sequence or as one comma-separated string.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_PORT", "EtcdEndpoint", "parse_endpoint", "parse_endpoints", "split_endpoints"]

DEFAULT_PORT = 2379

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_SCHEMES = {"http": False, "https": True}


@dataclass(frozen=True, slots=True)
class EtcdEndpoint:
    """One parsed endpoint: ``host`` (IPv6 without brackets), ``port``, and ``secure``: True
    for ``https://``, False for ``http://``, None when no scheme was written."""

    host: str
    port: int
    secure: bool | None = None

    @property
    def address(self) -> str:
        """``host:port`` as gRPC dials it (``[v6]:port`` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _malformed(raw: str, why: str) -> ValueError:
    return ValueError(f"malformed etcd endpoint {raw!r}: {why}")


def _port(text: str, raw: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise _malformed(raw, f"bad port {text!r} (1-65535)")
    return int(text)


def _ipv6(host: str, raw: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise _malformed(raw, f"{host!r} is not an IPv6 address") from None


def parse_endpoint(raw: str) -> EtcdEndpoint:
    """Parse one endpoint (see the module doc); ``ValueError`` naming it and the fault."""
    if not isinstance(raw, str):
        raise ValueError(f"an etcd endpoint must be a string, got {type(raw).__name__}")
    item = raw.strip()
    secure: bool | None = None
    scheme, sep, rest = item.partition("://")
    if sep:
        if scheme.lower() not in _SCHEMES:
            raise _malformed(raw, f"unsupported scheme {scheme!r} (http:// or https://)")
        secure = _SCHEMES[scheme.lower()]
        item = rest
    if item.endswith("/"):
        item = item[:-1]
    if not item:
        raise _malformed(raw, "no host")
    if "/" in item:
        raise _malformed(raw, "expected HOST:PORT, with no path")
    if item.startswith("["):  # [v6]:port or [v6]
        host, closed, after = item[1:].partition("]")
        if not closed or (after and not after.startswith(":")):
            raise _malformed(raw, "expected [IPV6]:PORT")
        port = _port(after[1:], raw) if after else DEFAULT_PORT
        return EtcdEndpoint(_ipv6(host, raw), port, secure)
    if item.count(":") > 1:  # a bare IPv6 address: no port can follow it
        try:
            return EtcdEndpoint(_ipv6(item, raw), DEFAULT_PORT, secure)
        except ValueError:
            why = "an IPv6 address with a port goes in brackets: [::1]:2379"
            raise _malformed(raw, why) from None
    host, colon, port_text = item.partition(":")
    if not _HOSTNAME.match(host):
        raise _malformed(raw, f"{host!r} is not a host name or IP address (expected HOST:PORT)")
    return EtcdEndpoint(host, _port(port_text, raw) if colon else DEFAULT_PORT, secure)


def split_endpoints(endpoints: str | Sequence[str]) -> list[EtcdEndpoint]:
    """Every endpoint of a sequence or a comma-separated string, parsed, duplicates dropped;
    ``ValueError`` when one is malformed or none is given."""
    if isinstance(endpoints, str):
        items = endpoints.split(",")
    elif isinstance(endpoints, Sequence):
        items = list(endpoints)
    else:
        raise ValueError(f"etcd endpoints must be a string or a list, got {endpoints!r}")
    parsed: dict[str, EtcdEndpoint] = {}
    for raw in items:
        if isinstance(raw, str) and not raw.strip():
            continue
        endpoint = parse_endpoint(raw)
        parsed.setdefault(endpoint.address, endpoint)
    if not parsed:
        raise ValueError("no etcd endpoint given")
    return list(parsed.values())


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """The ``host:port`` addresses to dial, and whether any endpoint asked for https."""
    parsed = split_endpoints(endpoints)
    return tuple(e.address for e in parsed), any(e.secure for e in parsed)
