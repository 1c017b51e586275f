"""What every command shares: the connection options, reaching etcd, one-line errors."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..errors import GrpcEtcdError
from ..naming import validate_service
from ..registry._options import DEFAULT_ENDPOINT
from ..registry._options import ENDPOINTS_ENV as ENV_ENDPOINTS

if TYPE_CHECKING:
    from .._registry import Registry
    from ..registry.etcd import AsyncEtcdClient, EtcdClient, TLSConfig

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENV_ENDPOINTS",
    "ENV_PASSWORD",
    "Options",
    "friendly_errors",
    "parse_endpoints",
    "validate_cli_service",
]

ENV_PASSWORD = "GRPC_ETCD_PASSWORD"
_ETCD_PORT = 2379
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _host_port(raw: str) -> tuple[str, int]:
    item = raw.strip()
    for scheme in ("http://", "https://"):
        if item.lower().startswith(scheme):
            item = item[len(scheme) :]
    item = item.rstrip("/")
    if item.startswith("["):  # [v6]:port or [v6]
        host, sep, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed etcd endpoint {raw!r}")
        with contextlib.suppress(ValueError):
            ipaddress.IPv6Address(host)
            return host, _port(port_text, raw)
        raise ValueError(f"malformed etcd endpoint {raw!r}: {host!r} is not an IPv6 address")
    host, _, port_text = item.partition(":")
    if not (_HOSTNAME.match(host) or _is_ipv4(host)):
        raise ValueError(f"malformed etcd endpoint {raw!r}: expected HOST:PORT")
    return host, _port(port_text, raw)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _port(text: str, raw: str) -> int:
    if not text:
        return _ETCD_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"malformed etcd endpoint {raw!r}: bad port {text!r}")
    return int(text)


def parse_endpoints(endpoints: str) -> list[tuple[str, int]]:
    """``"h1:2379,h2"`` -> ``[("h1", 2379), ("h2", 2379)]``; ``ValueError`` on a malformed one."""
    items = [item for item in endpoints.split(",") if item.strip()]
    if not items:
        raise ValueError("no etcd endpoint given")
    return [_host_port(item) for item in items]


def validate_cli_service(service: str) -> str:
    """A dotted service name as the CLI takes it (raw ``a/b/c`` targets are refused)."""
    if "/" in service:
        dotted = service.strip("/").replace("/", ".")
        raise ValueError(f"service name {service!r} must be dotted (e.g. {dotted!r})")
    return validate_service(service)


@dataclass(frozen=True, slots=True)
class Options:
    """The global options: which etcd, as whom, under which root."""

    endpoints: str = DEFAULT_ENDPOINT
    root: str = ""
    timeout: float = 5.0
    user: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    verbose: bool = False

    def validate(self) -> None:
        """Refuse malformed endpoints and half-given credentials before dialing anything."""
        parse_endpoints(self.endpoints)
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be > 0, got {self.timeout}")
        if (self.user is None) != (self.password is None):
            raise ValueError(f"--user and --password (or ${ENV_PASSWORD}) go together")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")

    def tls(self) -> TLSConfig | None:
        """The TLS settings, or ``None`` for plain text."""
        from ..registry.etcd import TLSConfig

        if self.cacert is None and self.cert is None:
            return None
        return TLSConfig(ca_file=self.cacert, cert_file=self.cert, key_file=self.key)

    def check_reachable(self) -> None:
        """Fail at once when every endpoint refuses the connection (instead of a long retry)."""
        self.validate()
        refused: list[str] = []
        for host, port in parse_endpoints(self.endpoints):
            try:
                with socket.create_connection((host, port), timeout=min(self.timeout, 2.0)):
                    return
            except ConnectionRefusedError:
                refused.append(f"{host}:{port}")
            except OSError:
                return  # slow or unresolvable: let the client's own timeout say so
        raise ConnectionRefusedError(
            f"cannot reach etcd at {', '.join(refused)}: connection refused"
        )

    def client(self) -> EtcdClient:
        """An etcd client for these options (reachability checked first)."""
        from ..registry.etcd import EtcdClient

        return EtcdClient(self.endpoints, **self._connection())

    def async_client(self) -> AsyncEtcdClient:
        """An asyncio etcd client for these options (reachability checked first)."""
        from ..registry.etcd import AsyncEtcdClient

        return AsyncEtcdClient(self.endpoints, **self._connection())

    def registry(self) -> Registry:
        """A registry for these options (reachability checked first)."""
        from .._registry import Registry

        return Registry(self.endpoints, root=self.root, **self._connection())

    def _connection(self) -> dict[str, Any]:
        """The credentials, TLS and timeout both kinds of client take, once etcd is reachable."""
        self.check_reachable()
        return {
            "username": self.user,
            "password": self.password,
            "tls": self.tls(),
            "timeout": self.timeout,
        }


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn our errors into one line on stderr and exit status 1."""
    try:
        yield
    except (GrpcEtcdError, ValueError, OSError, TimeoutError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(message) from None
