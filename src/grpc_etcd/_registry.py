"""``grpc_etcd.Registry``, ``grpc_etcd.Registration`` and ``grpc_etcd.channel``: the sync facade.

They run the asyncio facade (:mod:`grpc_etcd.aio._registry`) on a private event-loop thread
(``_loop.LoopThread``), so keep-alives and watches go on in the background while your code
blocks, and every fix to the logic lands in both twins at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ._channel._base import DEFAULT_DRAIN_TIMEOUT
from ._channel._sync import BalancedChannel
from ._closing import Closing
from ._loop import LoopThread
from .aio._registry import Registry as AsyncRegistry
from .aio._registry import _stop
from .allowlist import AllowList, allow_list
from .errors import ClosedError
from .node import DEFAULT_VERSION, Node, check_version
from .registry import registration as _aio_registration
from .registry._options import Methods, endpoints_or_default
from .registry.etcd import EtcdClient
from .snapshot import Snapshot
from .targets import parse_target

if TYPE_CHECKING:
    from .config import ServiceConfig
    from .policies import Policy
    from .registry.etcd import TLSConfig

__all__ = ["Registration", "Registry", "channel"]

RegistrationState = _aio_registration.RegistrationState


class Registration(Closing):
    """A registered server instance (sync). Made by :meth:`Registry.register`."""

    def __init__(self, loop: LoopThread, inner: _aio_registration.Registration) -> None:
        self._loop = loop
        self._inner = inner

    @property
    def node(self) -> Node:
        """The node as it is registered now."""
        return self._inner.node

    @property
    def key(self) -> str:
        """The etcd key of this instance."""
        return self._inner.key

    @property
    def lease_id(self) -> int:
        """The etcd lease the key is bound to (changes when the registration recovers)."""
        return self._inner.lease_id

    @property
    def ttl(self) -> int:
        """The lease TTL in seconds."""
        return self._inner.ttl

    @property
    def state(self) -> RegistrationState:
        """``REGISTERED``, ``LOST`` (registering again) or ``CLOSED``."""
        return self._inner.state

    def update(
        self,
        *,
        version: str | None = None,
        metadata: Mapping[str, str] | None = None,
        weight: int | None = None,
    ) -> None:
        """Rewrite the record in place (same key) with a new version, metadata or weight."""
        self._loop.run(self._inner.update(version=version, metadata=metadata, weight=weight))

    def close(self) -> None:
        """Delete the key and revoke the lease. Idempotent."""
        if self._inner.state is not RegistrationState.CLOSED and not self._loop.closed:
            self._loop.run(self._inner.close())

    def __repr__(self) -> str:
        return repr(self._inner)


class Registry(Closing):
    """A handle on an etcd cluster for registering and finding gRPC servers (sync).

    Same arguments as :class:`grpc_etcd.aio.Registry`. Closing it closes the registrations
    and channels it made; it is also a context manager.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 5.0,
        root: str = "",
    ) -> None:
        self._loop = LoopThread(name="grpc-etcd-registry")
        self._timeout = timeout
        self._channels: set[BalancedChannel] = set()
        try:
            self._client = EtcdClient(
                endpoints_or_default(endpoints),
                username=username,
                password=password,
                tls=tls,
                timeout=timeout,
                loop=self._loop,
            )
            self._inner = AsyncRegistry._around(self._client.aio, root)
        except BaseException:
            self._loop.close()
            raise

    @property
    def client(self) -> EtcdClient:
        """The underlying etcd client (for reads and writes of your own)."""
        return self._client

    @property
    def root(self) -> str:
        """The key prefix every service lives under ("" by default)."""
        return self._inner.root

    def register(
        self,
        service: str,
        *,
        address: str,
        version: str = DEFAULT_VERSION,
        ttl: int = 10,
        metadata: Mapping[str, str] | None = None,
        weight: int | None = None,
        methods: Methods = None,
        advertise: str | None = None,
        instance_id: str | None = None,
    ) -> Registration:
        """Register one server instance and keep it registered until ``close()``.

        See :meth:`grpc_etcd.aio.Registry.register` for the arguments.
        """
        self._check_open()
        inner = self._loop.run(
            self._inner.register(
                service,
                address=address,
                version=version,
                ttl=ttl,
                metadata=metadata,
                weight=weight,
                methods=methods,
                advertise=advertise,
                instance_id=instance_id,
            )
        )
        return Registration(self._loop, inner)

    def nodes(self, service: str) -> list[Node]:
        """The nodes of ``service`` registered now."""
        self._check_open()
        return self._loop.run(self._inner.nodes(service))

    def watch(
        self, service: str, *, allow: Iterable[str] | AllowList | None = None
    ) -> Iterator[Snapshot]:
        """Snapshots of ``service``: the current nodes first, then one per change. ``allow``:
        IP networks; records with an address outside them are ignored (a warning each).

        Close the iterator (or break out of a ``with contextlib.closing(...)``) to stop watching.
        """
        self._check_open()
        return self._loop.iterate(self._inner.watch(service, allow=allow_list(allow)))

    def channel(
        self,
        service: str,
        *,
        policy: str | Policy | None = None,
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        allow: Iterable[str] | AllowList | None = None,
        config: ServiceConfig | Mapping[str, Any] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> BalancedChannel:
        """A ``grpc.Channel`` that balances each call over the nodes of ``service``.

        ``config`` (the document of docs/routing.md; ``policy`` is a shortcut for its
        ``loadBalancingConfig``) is the code's; the document at ``/grpc-etcd/config/<service>``
        is laid over it, live. ``source``: this caller's labels, for routes' ``match.source``.
        ``allow``: the IP networks node addresses must lie in (``["10.0.0.0/8"]``); a record
        outside them is ignored with a warning naming its key."""
        self._check_open()
        if version is not None:
            check_version(version)  # "" too: it would silently mean no version
        allowed = allow_list(allow)
        channel = BalancedChannel(
            service,
            policy=policy,
            version=version,
            credentials=credentials,
            options=options,
            drain_timeout=drain_timeout,
            config=config,
            source=source,
        )

        async def attach() -> asyncio.Task[None]:
            return self._inner._attach(service, channel, allowed)

        try:
            task = self._loop.run(attach())
        except BaseException:
            channel.close()
            raise
        self._channels.add(channel)

        def on_close() -> None:
            self._channels.discard(channel)
            if self._loop.closed:
                return
            if self._loop.in_loop_thread():
                self._loop.call_soon(task.cancel)
            else:  # wait, so that its client key (if any) is gone when close() returns
                self._loop.run(_stop(task), timeout=self._timeout * 2)

        channel.add_close_callback(on_close)
        return channel

    def close(self) -> None:
        """Close the registrations and channels made here, the etcd client and the loop."""
        if self._loop.closed:
            return
        for channel in list(self._channels):
            channel.close()
        try:
            self._loop.run(self._inner.close(), timeout=self._timeout * 2)
            self._client.close()  # already closed by the aio registry: marks the twin closed
        finally:
            self._loop.close()

    def _check_open(self) -> None:
        if self._loop.closed:
            raise ClosedError("this Registry")


def channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> BalancedChannel:
    """A BalancedChannel for an ``etcd://HOST:PORT/SERVICE?policy=...&version=...`` target.

    The channel owns its registry: closing the channel closes both.
    """
    parsed = parse_target(target)
    registry = Registry(parsed.endpoints, timeout=parsed.timeout, root=parsed.root)
    try:
        balanced = registry.channel(
            parsed.service,
            policy=parsed.policy,
            version=parsed.version,
            credentials=credentials,
            options=options,
        )
    except BaseException:
        registry.close()
        raise
    balanced.add_close_callback(registry.close)
    return balanced
