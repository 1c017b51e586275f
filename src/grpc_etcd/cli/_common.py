"""What every command shares: the connection options, reaching etcd, one-line errors."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..errors import GrpcEtcdError
from ..registry._options import DEFAULT_ENDPOINT
from ..registry._options import ENDPOINTS_ENV as ENV_ENDPOINTS
from ..registry.etcd import split_endpoints

if TYPE_CHECKING:
    from .._registry import Registry
    from ..registry.etcd import AsyncEtcdClient, EtcdClient, TLSConfig

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENV_ENDPOINTS",
    "ENV_PASSWORD",
    "Options",
    "check_readable",
    "friendly_errors",
    "one_line",
]

ENV_PASSWORD = "GRPC_ETCD_PASSWORD"


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
        split_endpoints(self.endpoints)
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be > 0, got {self.timeout}")
        if (self.user is None) != (self.password is None):
            raise ValueError(f"--user and --password (or ${ENV_PASSWORD}) go together")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        for flag, path in (("--cacert", self.cacert), ("--cert", self.cert), ("--key", self.key)):
            if path is not None:  # else: "[Errno 2] No such file or directory: 'x'", no flag
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror})") from None

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
        for endpoint in split_endpoints(self.endpoints):
            try:
                with socket.create_connection(
                    (endpoint.host, endpoint.port), timeout=min(self.timeout, 2.0)
                ):
                    return
            except ConnectionRefusedError:
                refused.append(endpoint.address)
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


def check_readable(registry: Registry, service: str) -> None:
    """Read ``service``'s nodes once, so that a refused read ends a command in one line (the
    watch it starts would retry a refusal forever, as channels do). Other errors: the watch
    says when etcd answers again."""
    from ..registry.etcd import AuthError, EtcdError

    try:
        registry.nodes(service)
    except AuthError:
        raise
    except EtcdError:
        pass


def one_line(exc: BaseException) -> str:
    """An error as the CLI says it: the first line of its message (its type's name when it
    has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn our errors into one line on stderr and exit status 1."""
    try:
        yield
    except (GrpcEtcdError, ValueError, OSError, TimeoutError) as exc:
        raise click.ClickException(one_line(exc)) from None
