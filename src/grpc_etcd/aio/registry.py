"""``grpc_etcd.aio.Registry``: register, discover and balance, in asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from ..naming import validate_service
from ..node import Node
from ..registry._options import Methods, build_node
from ..registry.etcd import AsyncEtcdClient, TLSConfig
from ..registry.registration import Registration
from ..registry.watcher import read_nodes, watch_snapshots
from ..snapshot import Snapshot

if TYPE_CHECKING:
    from ..channel.aio import BalancedChannel
    from ..policies import Policy

__all__ = ["Registry", "channel"]

log = logging.getLogger("grpc_etcd.registry")

DEFAULT_ENDPOINT = "127.0.0.1:2379"


class Registry:
    """A handle on an etcd cluster for registering and finding gRPC servers (asyncio).

    ``Registry("10.0.0.1:2379,10.0.0.2:2379", username=..., password=..., tls=TLSConfig(...))``;
    ``root`` puts every key under a prefix (``/prod`` -> ``/prod/hwholiday/srv/app/<id>``).
    Closing it closes the registrations and channels it made.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINT,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        timeout: float = 5.0,
        root: str = "",
    ) -> None:
        self._client = AsyncEtcdClient(
            endpoints, username=username, password=password, tls=tls, timeout=timeout
        )
        self.root = root
        self._registrations: set[Registration] = set()
        self._channels: set[BalancedChannel] = set()
        self._closed = False

    @property
    def client(self) -> AsyncEtcdClient:
        """The underlying etcd client (for reads and writes of your own)."""
        return self._client

    async def register(
        self,
        service: str,
        *,
        address: str,
        version: str = "latest",
        ttl: int = 10,
        metadata: Mapping[str, str] | None = None,
        weight: int | None = None,
        methods: Methods = None,
        advertise: str | None = None,
        instance_id: str | None = None,
    ) -> Registration:
        """Register one server instance and keep it registered until ``close()``.

        ``address`` is where the server listens; a wildcard (``0.0.0.0:50051``) needs
        ``advertise`` (what clients dial). ``methods`` lists the RPC method names served (or
        maps them to :class:`grpc_etcd.MethodInfo`). Raises if etcd cannot be reached for the
        first write.
        """
        self._check_open()
        node = build_node(
            service,
            address=address,
            version=version,
            metadata=metadata,
            weight=weight,
            methods=methods,
            advertise=advertise,
            instance_id=instance_id,
            root=self.root,
        )
        registration = Registration(self._client, node, ttl=ttl, root=self.root)
        await registration.start()
        self._registrations = {r for r in self._registrations if r.state.value != "closed"}
        self._registrations.add(registration)
        return registration

    async def nodes(self, service: str) -> list[Node]:
        """The nodes of ``service`` registered now."""
        self._check_open()
        return await read_nodes(self._client, validate_service(service), self.root)

    def watch(self, service: str) -> AsyncIterator[Snapshot]:
        """Snapshots of ``service``: the current nodes first, then one per change."""
        self._check_open()
        return watch_snapshots(self._client, validate_service(service), self.root)

    def channel(
        self,
        service: str,
        *,
        policy: str | Policy = "version",
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> BalancedChannel:
        """A ``grpc.aio.Channel`` that balances each call over the nodes of ``service``.

        Must be called with an event loop running (the watcher is a task on it).
        """
        from ..channel.aio import BalancedChannel

        self._check_open()
        snapshots = self.watch(service)
        channel = BalancedChannel(
            service, policy=policy, version=version, credentials=credentials, options=options
        )
        task = asyncio.get_running_loop().create_task(
            feed_channel(snapshots, channel), name=f"grpc-etcd watch {service}"
        )
        self._channels.add(channel)

        def on_close() -> None:
            task.cancel()
            self._channels.discard(channel)

        channel.add_close_callback(on_close)
        return channel

    async def close(self) -> None:
        """Close the channels and registrations made here, then the etcd client."""
        if self._closed:
            return
        self._closed = True
        for channel in list(self._channels):
            await channel.close()
        # Concurrently: with etcd unreachable each close waits for the request timeout.
        await asyncio.gather(*(r.close() for r in self._registrations))
        await self._client.close()

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Registry is closed")


class _Updatable(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...


async def feed_channel(snapshots: AsyncIterator[Snapshot], channel: _Updatable) -> None:
    """Hand each snapshot to ``channel.update`` until cancelled (sync and aio channels alike)."""
    try:
        async for snapshot in snapshots:
            channel.update(snapshot)
    finally:
        with contextlib.suppress(Exception):
            await snapshots.aclose()  # type: ignore[attr-defined]


def channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> BalancedChannel:
    """A ``grpc.aio`` BalancedChannel for an ``etcd://HOST:PORT/SERVICE?...`` target.

    The channel owns its registry: closing the channel closes both. Call it with a loop running.
    """
    from ..targets import parse_target

    parsed = parse_target(target)
    registry = Registry(parsed.endpoints, timeout=parsed.timeout, root=parsed.root)
    balanced = registry.channel(
        parsed.service,
        policy=parsed.policy,
        version=parsed.version,
        credentials=credentials,
        options=options,
    )
    balanced.add_close_callback(registry.close)
    return balanced
