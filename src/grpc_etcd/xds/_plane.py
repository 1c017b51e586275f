"""The control plane: etcd watches in, an ADS server out (asyncio).

A service is watched from the moment it is named (``services=``) or a client first asks for
one of its resources: its nodes with the gap-free snapshot watcher, its config key alongside.
Until both have been read once, its resources are pending and no client is told anything
about it (an early, empty answer would make clients delete the service), unless etcd refuses
them to the control plane's user: then clients are told they do not exist, and why (they fail
fast instead of waiting out their resource timeout), while the watch retries, until the user
may read them. A service read once stays served as it was through any later failure, a refusal
too (its clients keep it anyway: their bootstrap sets ``ignore_resource_deletion``). Every change
rebuilds the service's :class:`~grpc_etcd.xds.translate.Translation` and wakes every stream,
which sends only what changed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

import grpc

from .._closing import AsyncClosing
from ..allowlist import AllowList, Network, allow_list
from ..config import ServiceConfig
from ..naming import validate_service
from ..node import parse_address
from ..registry.config_watch import watch_config
from ..registry.etcd import AsyncEtcdClient, AuthError, TLSConfig
from ..registry.watcher import watch_snapshots
from ..snapshot import Snapshot
from . import _protos as pb
from ._ads import PENDING, AdsStream, NotServed
from .names import service_of
from .translate import LDS, ServiceState, Translation

if TYPE_CHECKING:
    from ..aio import Registry as AsyncRegistry

__all__ = ["MAX_SERVICES", "ControlPlane", "check_listen", "check_tls", "server_credentials"]

#: Without ``services=``, a service is watched once a client names it: at most this many, so
#: clients naming endless services cannot make the control plane watch all of etcd.
MAX_SERVICES = 1000

log = logging.getLogger("grpc_etcd.xds")

#: A client's labels, sorted: what the control plane counts connected clients by.
Labels = tuple[tuple[str, str], ...]


def check_listen(listen: str) -> str:
    """``listen`` if it is ``host:port`` (port 0: any free one), else ValueError naming it."""
    host, _, port = listen.rpartition(":")
    parse_address(f"{host}:1" if port == "0" else listen)
    return listen


def check_tls(tls: TLSConfig | None) -> TLSConfig | None:
    """``tls`` if it can serve: ``cert_file`` and ``key_file`` (the control plane's own
    certificate), ``ca_file`` optional (then clients must present a certificate it signed)."""
    if tls is None:
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("the control plane's TLS needs a certificate and its key (--cert, --key)")
    if tls.server_name is not None:
        raise ValueError("server_name is for clients; the control plane's TLS takes none")
    return tls


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OSError(f"cannot read the control plane's {what} {path}: {exc.strerror}") from None


def _check_pems(key: str, cert: str, ca: str | None = None) -> None:
    """Refuse, naming the files, what grpc would only refuse by failing to listen (``cannot
    listen``) or, after a rotation, every handshake: a key that is not the certificate's,
    files that are not PEM, a client CA file with no certificate in it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A key that needs a password fails here (grpc takes none) instead of prompting.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = f"key {key} is not the private key of its certificate {cert}"
        else:
            why = f"certificate {cert} and key {key} are not a PEM certificate and its private key"
        raise OSError(f"the control plane's {why}") from None
    if ca is not None:
        try:
            context.load_verify_locations(ca)
        except ssl.SSLError:
            raise OSError(f"the control plane's client CA {ca} holds no PEM certificate") from None


async def _check_free(listen: str) -> None:
    """Refuse ``listen`` (``OSError``, one line) when none of its addresses can be bound, as
    grpc would; checked first because grpc's own refusal also logs a line of its core to
    stderr. (A port taken between this check and grpc's bind still fails, with that line.)"""
    host, _, port = listen.rpartition(":")
    if port == "0":
        return
    loop = asyncio.get_running_loop()
    why = ""
    try:
        addresses = await loop.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {listen} ({(exc.strerror or str(exc)).lower()})") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            try:
                probe.bind(address)
            except OSError as exc:
                in_use = exc.errno == errno.EADDRINUSE
                why = why or ("address in use" if in_use else (exc.strerror or str(exc)).lower())
                continue
        return  # one address binds: grpc listens on it
    raise OSError(f"cannot listen on {listen} ({why or 'no address'})")


class _CertificateFiles:
    """The control plane's TLS files, read again when one changes: a rotated certificate (or
    client CA) serves new connections without a restart."""

    def __init__(self, tls: TLSConfig) -> None:
        assert tls.cert_file is not None and tls.key_file is not None
        self._files = [(tls.key_file, "key"), (tls.cert_file, "certificate")]
        if tls.ca_file is not None:
            self._files.append((tls.ca_file, "client CA"))
        self._stamp: tuple[int, ...] = ()

    def _stamps(self) -> tuple[int, ...]:
        stamps = []
        for path, what in self._files:
            try:
                stamps.append(os.stat(path).st_mtime_ns)
            except OSError as exc:
                why = f"cannot read the control plane's {what} {path}: {exc.strerror}"
                raise OSError(why) from None
        return tuple(stamps)

    def load(self) -> Any:
        """The files as they are now (``OSError`` naming one that cannot be read, or that
        cannot serve TLS: a key that is not the certificate's, a CA file with no
        certificate)."""
        stamp = self._stamps()
        key, cert, *roots = (_read(path, what) for path, what in self._files)
        _check_pems(*(path for path, _ in self._files))
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=roots[0] if roots else None
        )

    def changed(self) -> Any:
        """New files since the last load, or None (grpc keeps the current ones); called by
        grpc before each handshake."""
        try:
            if self._stamps() == self._stamp:
                return None
            configuration = self.load()
        except OSError as exc:  # half-written, or gone: keep serving with what was read
            log.warning("keeping the control plane's current TLS files: %s", exc)
            return None
        log.info("the control plane's TLS files changed: new connections use them")
        return configuration


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """The control plane's TLS from ``tls``'s files (read now, and again when they change):
    with ``ca_file``, mutual TLS (a client without a certificate signed by it fails the
    handshake)."""
    check_tls(tls)
    files = _CertificateFiles(tls)
    return grpc.dynamic_ssl_server_credentials(
        files.load(), files.changed, require_client_authentication=tls.ca_file is not None
    )


class _Service:
    """One watched service: its latest snapshot and config, and their translation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.snapshot: Snapshot | None = None
        self.config: ServiceConfig | None = None
        self.config_read = False
        self.translation: Translation | None = None
        self.synced = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.warned: set[str] = set()
        #: etcd's refusal to read the nodes or the config ("nodes", "config"), until a read
        #: of them succeeds: while it was never translated, the service does not exist.
        self.refusals: dict[str, str] = {}
        self.hidden = False  # told clients it does not exist (and logged so)
        #: The labels of the connected clients that ask for this service, and how many of
        #: each (their zone is one: ``node.locality.zone``).
        self.clients: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.callers: dict[str, int] = {}

    def zone_aware(self) -> bool:
        """True when this service's config asks for zone_aware locality."""
        locality = self.config.locality if self.config is not None else None
        return locality is not None and locality.mode == "zone_aware"

    def count_callers(self) -> bool:
        """Count the connected clients per locality again; True when the count changed."""
        locality = self.config.locality if self.config is not None else None
        callers: Counter[str] = Counter()
        if locality is not None:
            for labels, count in self.clients.items():
                zone = dict(labels).get(locality.key)
                if zone:
                    callers[zone] += count
        if dict(callers) == self.callers:
            return False
        self.callers = dict(callers)
        return True

    def rebuild(self) -> bool:
        """Translate again after a change; False while nodes or config are still unread."""
        if self.snapshot is None or not self.config_read:
            return False
        self.count_callers()
        state = ServiceState.of(self.snapshot, self.config, self.callers)
        translation = Translation(state)
        for warning in translation.warnings:
            if warning not in self.warned:
                log.warning("%s", warning)
        self.warned = set(translation.warnings)
        self.translation = translation
        self.synced.set()
        return True


class ControlPlane(AsyncClosing):
    """An xDS (ADS, state of the world, v3) control plane fed by etcd.

    ``ControlPlane(registry_or_client, services=["a.srv.app"], listen="127.0.0.1:18000")``:
    ``registry_or_client`` is a ``grpc_etcd.aio.Registry`` (its root is used) or an
    ``AsyncEtcdClient``; ``services=None`` serves every service a client asks for; ``allow``
    lists the IP networks a node's address must be in (see ``grpc_etcd.allowlist``). ``tls``
    serves over TLS: ``TLSConfig(cert_file=..., key_file=...)`` is the control plane's own
    certificate; with ``ca_file`` too, clients must present a certificate signed by it (mutual
    TLS), and a client without one gets nothing. Use it as ``async with`` (or ``await
    start()`` / ``await close()``) on the event loop of its client.
    """

    def __init__(
        self,
        registry_or_client: AsyncRegistry | AsyncEtcdClient,
        *,
        services: Iterable[str] | None = None,
        listen: str = "127.0.0.1:0",
        root: str | None = None,
        allow: Iterable[str | Network] | AllowList | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        if isinstance(registry_or_client, AsyncEtcdClient):
            self._client = registry_or_client
            self.root = root or ""
        else:
            self._client = registry_or_client.client
            self.root = registry_or_client.root if root is None else root
        self.services = (
            None if services is None else frozenset(validate_service(s) for s in services)
        )
        self._listen = check_listen(listen)
        self._allow = allow_list(allow)
        self.tls = check_tls(tls)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self._watched: dict[str, _Service] = {}
        self._full = False  # warned that MAX_SERVICES are watched
        self._wakers: set[asyncio.Event] = set()
        #: Per connected stream, the listeners it asks for and its client's labels.
        self._members: dict[AdsStream, tuple[frozenset[str], Labels]] = {}
        self._closed = False

    @property
    def address(self) -> str:
        """``host:port`` the control plane listens on (after ``start()``)."""
        host = self._listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def security(self) -> str:
        """``"plain text"``, ``"TLS"`` or ``"mutual TLS"``: what a client must speak."""
        if self.tls is None:
            return "plain text"
        return "TLS" if self.tls.ca_file is None else "mutual TLS"

    async def start(self) -> None:
        """Watch the named services and start serving ADS."""
        await _check_free(self._listen)
        # Without SO_REUSEPORT a second control plane on the port fails instead of sharing it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb.add_ads_servicer(_Servicer(self), server)
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self._listen)
            else:
                self.port = server.add_secure_port(self._listen, server_credentials(self.tls))
        except OSError:
            await server.stop(None)
            raise
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if not self.port:
            await server.stop(None)
            raise OSError(f"cannot listen on {self._listen} (address in use?)")
        for service in sorted(self.services or ()):
            self._watch(service)
        await server.start()
        self._server = server
        log.info("xDS control plane listening on %s (%s)", self.address, self.security)

    async def wait_synced(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every service watched so far has been read from etcd once."""
        events = [service.synced.wait() for service in self._watched.values()]
        await asyncio.wait_for(asyncio.gather(*events), timeout)

    async def wait_closed(self) -> None:
        """Serve until the server stops (for a process that only runs the control plane)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def close(self, grace: float | None = None) -> None:
        """Stop serving (streams end after ``grace`` seconds) and stop every watch."""
        self._closed = True
        if self._server is not None:
            await self._server.stop(grace)
        tasks = [task for service in self._watched.values() for task in service.tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    # ------------------------------------------------------------ state

    def translation(self, service: str) -> Translation | None:
        """The current translation of a watched service (None until it is synced)."""
        watched = self._watched.get(service)
        return watched.translation if watched else None

    def lookup(self, type_url: str, name: str, source: Mapping[str, str]) -> Any:
        """A resource for a stream: serialized, ``PENDING`` (not synced yet), ``NotServed``
        (etcd refuses the service to the control plane's user) or None (not ours)."""
        service = service_of(name)
        if self.services is not None and service not in self.services:
            return None
        try:
            watched = self._watch(service)
        except ValueError:
            return None
        if watched.translation is None:
            if watched.refusals:  # the client is told at once, not left to time out
                return NotServed(f"etcd refuses {service} to the control plane (see its log)")
            return PENDING
        return watched.translation.serialized(type_url, name, source)

    def _watch(self, service: str) -> _Service:
        watched = self._watched.get(service)
        if watched is not None:
            return watched
        validate_service(service)
        if self._closed:
            raise ValueError("the control plane is closed")
        if self.services is None and len(self._watched) >= MAX_SERVICES:
            if not self._full:
                self._full = True
                log.warning(
                    "not watching %s: %d services are watched already (clients name them; "
                    "list the services to serve with --services)",
                    service,
                    MAX_SERVICES,
                )
            raise ValueError(f"{MAX_SERVICES} services are watched already")
        watched = _Service(service)
        for names, labels in self._members.values():
            if service in names:
                watched.clients[labels] += 1
        self._watched[service] = watched
        watched.tasks = [
            asyncio.create_task(self._follow_nodes(watched), name=f"xds nodes {service}"),
            asyncio.create_task(self._follow_config(watched), name=f"xds config {service}"),
        ]
        for task in watched.tasks:
            task.add_done_callback(_log_failure)
        log.info("watching %s", service)
        return watched

    async def _follow_nodes(self, watched: _Service) -> None:
        async for snapshot in watch_snapshots(
            self._client,
            watched.name,
            self.root,
            allow=self._allow,
            on_error=lambda exc: self._failed(watched, "nodes", exc),
        ):
            watched.snapshot = snapshot
            watched.refusals.pop("nodes", None)
            self._changed(watched)

    async def _follow_config(self, watched: _Service) -> None:
        async for config in watch_config(
            self._client,
            watched.name,
            self.root,
            on_error=lambda exc: self._failed(watched, "config", exc),
        ):
            watched.config = config
            watched.config_read = True
            watched.refusals.pop("config", None)
            self._changed(watched)

    def _failed(self, watched: _Service, what: str, exc: Exception) -> None:
        """A read of a service's ``what`` failed: a refusal of one never translated makes
        it not exist for clients (said once per service, until it is served); an outage
        keeps it pending."""
        if not isinstance(exc, AuthError):
            return
        watched.refusals[what] = str(exc)
        if watched.hidden or watched.translation is not None:
            return
        watched.hidden = True
        log.warning(
            "not serving %s: %s; clients asking for it are told it does not exist until the "
            "control plane's etcd user may read it (grpc-etcd acl grant %s --xds USER)",
            watched.name,
            exc,
            watched.name,
        )
        self._wake()

    def _changed(self, watched: _Service) -> None:
        if watched.rebuild():
            if watched.hidden:
                watched.hidden = False
                log.info("serving %s: the control plane may read it now", watched.name)
            self._wake()

    def _wake(self) -> None:
        for waker in self._wakers:
            waker.set()

    def _joined(self, stream: AdsStream, gone: bool = False) -> None:
        """Count a stream's client among the callers of the services whose listener it asks
        for (zone_aware weighs localities by them), after a request that may have changed
        which ones or its labels, or once it is ``gone``; a service whose count of callers
        per locality changed is translated again."""
        before = self._members.pop(stream, (frozenset(), ()))
        after = _membership(stream) if not gone else (frozenset(), ())
        if after[0]:
            self._members[stream] = after
        if after == before:
            return
        for names, labels, step in ((before[0], before[1], -1), (after[0], after[1], 1)):
            for name in names:
                watched = self._watched.get(name)
                if watched is not None:
                    watched.clients[labels] += step
        for name in before[0] | after[0]:
            watched = self._watched.get(name)
            if watched is not None:
                watched.clients += Counter()  # drop the zeros
                if watched.zone_aware() and watched.count_callers():
                    self._changed(watched)

    @contextlib.contextmanager
    def _waker(self) -> Any:
        event = asyncio.Event()
        self._wakers.add(event)
        try:
            yield event
        finally:
            self._wakers.discard(event)


def _membership(stream: AdsStream) -> tuple[frozenset[str], Labels]:
    """The listeners (services) a stream asks for and its client's labels."""
    names = stream.subscriptions().get(LDS, frozenset())
    return frozenset(names), tuple(sorted(stream.source.items()))


def _log_failure(task: asyncio.Task[None]) -> None:
    """A watch that ends with an error leaves its service as it was: say so, loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "%s stopped: %r; its resources stay as they were", task.get_name(), task.exception()
        )


class _Servicer(pb.AdsServicer):  # type: ignore[misc]
    """``AggregatedDiscoveryService``: one :class:`AdsStream` per client stream."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        stream = AdsStream()
        plane = self._plane
        with plane._waker() as wake:

            async def read() -> None:
                try:
                    async for request in request_iterator:
                        stream.on_request(request)
                        plane._joined(stream)
                        wake.set()
                finally:
                    plane._joined(stream, gone=True)
                    wake.set()

            reader = asyncio.create_task(read())
            try:
                while not reader.done():
                    await wake.wait()
                    wake.clear()
                    for response in stream.responses(self._plane.lookup):
                        yield response
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
