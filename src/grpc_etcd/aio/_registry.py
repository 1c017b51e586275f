"""``grpc_etcd.aio.Registry``: register, discover and balance, in asyncio.

The facade: the one layer that knows both etcd (``registry/``) and channels (``_channel/``).
The sync ``grpc_etcd.Registry`` drives this one on a loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from .._channel._aio import BalancedChannel
from .._channel._base import DEFAULT_DRAIN_TIMEOUT
from .._closing import AsyncClosing
from ..allowlist import AllowList, allow_list
from ..clients import Client, ClientView, new_client_id
from ..config import ServiceConfig
from ..errors import ClosedError
from ..naming import validate_service
from ..node import DEFAULT_VERSION, Node, check_version
from ..registry._options import Methods, build_node, endpoints_or_default
from ..registry.clients_watch import ClientKey, watch_clients
from ..registry.config_watch import watch_config
from ..registry.etcd import AsyncEtcdClient, TLSConfig
from ..registry.registration import Registration, RegistrationState
from ..registry.watcher import read_nodes, watch_snapshots
from ..snapshot import Snapshot
from ..targets import parse_target

if TYPE_CHECKING:
    from ..policies import Policy

__all__ = ["Registry", "channel", "feed_channel"]

log = logging.getLogger("grpc_etcd.registry")


class Registry(AsyncClosing):
    """A handle on an etcd cluster for registering and finding gRPC servers (asyncio).

    ``Registry("10.0.0.1:2379,10.0.0.2:2379", username=..., password=..., tls=TLSConfig(...))``;
    ``root`` puts every key under a prefix (``/prod`` -> ``/prod/hwholiday/srv/app/<id>``).
    With no ``endpoints``: ``$GRPC_ETCD_ENDPOINTS`` (comma-separated), else ``127.0.0.1:2379``.
    Closing it closes the registrations and channels it made.
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
        client = AsyncEtcdClient(
            endpoints_or_default(endpoints),
            username=username,
            password=password,
            tls=tls,
            timeout=timeout,
        )
        self._setup(client, root)

    @classmethod
    def _around(cls, client: AsyncEtcdClient, root: str) -> Registry:
        """A registry over an existing client (the sync twin shares its client this way)."""
        registry = cls.__new__(cls)
        registry._setup(client, root)
        return registry

    def _setup(self, client: AsyncEtcdClient, root: str) -> None:
        self._client = client
        self._root = root
        self._registrations: set[Registration] = set()
        self._channels: set[BalancedChannel] = set()
        self._feeds: set[asyncio.Task[None]] = set()  # one per channel, sync or aio
        self._closed = False

    @property
    def root(self) -> str:
        """The key prefix every service lives under ("" by default)."""
        return self._root

    @property
    def client(self) -> AsyncEtcdClient:
        """The underlying etcd client (for reads and writes of your own)."""
        return self._client

    async def register(
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
        self._registrations = {
            r for r in self._registrations if r.state is not RegistrationState.CLOSED
        }
        self._registrations.add(registration)
        return registration

    async def nodes(self, service: str) -> list[Node]:
        """The nodes of ``service`` registered now."""
        self._check_open()
        return await read_nodes(self._client, validate_service(service), self.root)

    def watch(
        self, service: str, *, allow: Iterable[str] | AllowList | None = None
    ) -> AsyncIterator[Snapshot]:
        """Snapshots of ``service``: the current nodes first, then one per change. ``allow``:
        IP networks; records with an address outside them are ignored (a warning each)."""
        self._check_open()
        return watch_snapshots(self._client, validate_service(service), self.root, allow=allow)

    def channel(
        self,
        service: str,
        *,
        policy: str | Policy | None = None,
        version: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        interceptors: Sequence[Any] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        allow: Iterable[str] | AllowList | None = None,
        config: ServiceConfig | Mapping[str, Any] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> BalancedChannel:
        """A ``grpc.aio.Channel`` that balances each call over the nodes of ``service``.

        ``config`` (the document of docs/routing.md; ``policy`` is a shortcut for its
        ``loadBalancingConfig``) is the code's; the document at ``/grpc-etcd/config/<service>``
        is laid over it, live. ``source``: this caller's labels, for routes' ``match.source``.
        ``allow``: the IP networks node addresses must lie in (``["10.0.0.0/8"]``); a record
        outside them is ignored with a warning naming its key. Must be called with an event
        loop running (the watchers are tasks on it).
        """
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
            interceptors=interceptors,
            drain_timeout=drain_timeout,
            config=config,
            source=source,
        )
        task = self._attach(service, channel, allowed)
        self._channels.add(channel)

        async def on_close() -> None:
            self._channels.discard(channel)
            await _stop(task)  # its client key, if any, is deleted by then

        channel.add_close_callback(on_close)
        return channel

    def _attach(
        self, service: str, channel: _Updatable, allow: AllowList | None = None
    ) -> asyncio.Task[None]:
        """Feed ``channel`` (sync or aio) the nodes and the config of ``service`` from etcd,
        and while its config asks for them, the view of its fellow clients (holding its own
        client key, labelled with ``channel.client_labels``): a task on the running loop,
        until it is cancelled. Both twins attach their channels here."""
        self._check_open()

        def unreadable(exc: Exception) -> None:
            channel.resolver_error(f"cannot read its nodes from etcd: {exc}")

        channel._resolving_from(f"etcd at {', '.join(self._client.endpoints)}")

        snapshots = watch_snapshots(
            self._client, validate_service(service), self._root, allow=allow, on_error=unreadable
        )
        configs = watch_config(self._client, service, self._root)
        clients = _Clients(self._client, service, self._root, new_client_id())
        task = asyncio.get_running_loop().create_task(
            feed_channel(snapshots, channel, configs, clients), name=f"grpc-etcd watch {service}"
        )
        self._feeds.add(task)
        task.add_done_callback(self._feeds.discard)
        return task

    async def close(self) -> None:
        """Close the channels and registrations made here, then the etcd client."""
        if self._closed:
            return
        self._closed = True
        for channel in list(self._channels):
            await channel.close()
        # The sync twin's channels too: their client keys are deleted before the client closes.
        await asyncio.gather(*(_stop(task) for task in list(self._feeds)))
        # Concurrently: with etcd unreachable each close waits for the request timeout.
        await asyncio.gather(*(r.close() for r in self._registrations))
        await self._client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Registry")


class _Updatable(Protocol):
    def update(self, snapshot: Snapshot) -> None: ...

    def resolver_error(self, error: str | None) -> None: ...

    def _resolving_from(self, source: str) -> None: ...

    def configure(self, config: ServiceConfig | None) -> None: ...

    @property
    def needs_clients(self) -> bool: ...

    def update_clients(self, view: ClientView) -> None: ...

    @property
    def client_labels(self) -> dict[str, str]: ...


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has finished (its ``finally`` blocks included)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.shield(task)
    if not task.done():  # we were cancelled ourselves while waiting
        raise asyncio.CancelledError


#: How long a channel that needs the view of its fellow clients waits for the first one
#: before following the nodes (it comes in one etcd round trip; without it the channel
#: would first connect to a stand-in subset).
_FIRST_VIEW_WAIT = 1.0


class _Clients:
    """One channel's part in its service's fleet of clients (docs/scale.md):
    its client key and its view of the others, held while its config asks for them. The key
    keeps its id for the channel's life; its labels follow the config (``locality.key``)."""

    def __init__(self, client: AsyncEtcdClient, service: str, root: str, client_id: str) -> None:
        self._client = client
        self._service = service
        self._root = root
        self._own = Client(client_id)
        self._key: ClientKey | None = None
        self._task: asyncio.Task[None] | None = None
        self._viewed = asyncio.Event()

    async def follow(self, channel: _Updatable) -> None:
        """Hold the key and feed ``channel`` the view while it needs them; else let go. A
        config whose locality names another key writes the key again with the new labels."""
        labels = channel.client_labels
        if self._task is not None and (not channel.needs_clients or labels != self._own.labels):
            await self.close()
        if channel.needs_clients and self._task is None:
            self._own = Client(self._own.id, labels)
            self._viewed.clear()
            self._key = ClientKey(self._client, self._service, self._own, root=self._root).keep()
            self._task = asyncio.get_running_loop().create_task(
                self._feed(channel), name=f"grpc-etcd clients of {self._service}"
            )

    async def first_view(self) -> None:
        """Wait for the first view, when one is being followed."""
        if self._task is not None:
            await self._viewed.wait()

    async def close(self) -> None:
        """Stop following the others and delete the key (revoking its lease)."""
        task, self._task = self._task, None
        key, self._key = self._key, None
        if task is not None:
            await _stop(task)
        if key is not None:
            await key.close()

    async def _feed(self, channel: _Updatable) -> None:
        views = watch_clients(self._client, self._service, self._own, self._root)
        async with contextlib.aclosing(views):
            async for view in views:
                channel.update_clients(view)
                self._viewed.set()


async def feed_channel(
    snapshots: AsyncIterator[Snapshot],
    channel: _Updatable,
    configs: AsyncIterator[ServiceConfig | None] | None = None,
    clients: _Clients | None = None,
) -> None:
    """Hand each snapshot to ``channel.update`` and each config from etcd to
    ``channel.configure`` until cancelled (sync and aio channels alike); with ``clients``,
    also the views of the fellow clients while the channel's config needs them."""

    async def follow_nodes() -> None:
        if clients is not None:  # the code's config may need them from the start
            await clients.follow(channel)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FIRST_VIEW_WAIT):
                    await clients.first_view()
        async for snapshot in snapshots:
            channel.update(snapshot)

    async def follow_config(configs: AsyncIterator[ServiceConfig | None]) -> None:
        async for config in configs:
            try:
                channel.configure(config)
            except Exception:  # a config that validates but cannot apply: keep the last
                log.exception("cannot apply the config of the channel of %s", channel)
            if clients is not None:
                await clients.follow(channel)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(follow_nodes())
            if configs is not None:
                group.create_task(follow_config(configs))
    finally:
        for stream in (snapshots, configs):
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[union-attr]
        if clients is not None:
            await clients.close()


def channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    interceptors: Sequence[Any] | None = None,
) -> BalancedChannel:
    """A ``grpc.aio`` BalancedChannel for an ``etcd://HOST:PORT/SERVICE?...`` target.

    The channel owns its registry: closing the channel closes both. Call it with a loop running.
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
            interceptors=interceptors,
        )
    except BaseException:
        # Nothing has used the client yet (its channels open on first use): drop it now.
        _close_soon(registry)
        raise
    balanced.add_close_callback(registry.close)
    return balanced


def _close_soon(registry: Registry) -> None:
    with contextlib.suppress(RuntimeError):  # no running loop: nothing was opened on one
        task = asyncio.get_running_loop().create_task(registry.close())
        _pending.add(task)
        task.add_done_callback(_pending.discard)


# Close tasks nobody awaits, referenced until they finish (asyncio keeps only weak references).
_pending: set[asyncio.Task[None]] = set()
