"""Run a registered server until told to stop, then drain it so that no call is lost.

The order is what makes a stop lossless: clients must stop *picking* this server before it
stops *accepting*. So on SIGTERM/SIGINT (or your own event) ``serve()`` marks the health
servicer NOT_SERVING, deletes the key and revokes the lease (clients watching etcd drop the
node within milliseconds), waits ``drain_delay`` for them to see it, and only then calls
``server.stop(grace)`` so the calls in flight finish::

    server.start()
    registration = registry.register("my.service", address=f"127.0.0.1:{port}")
    grpc_etcd.serve(server, registration, health=True)   # returns after a clean drain

``grpc_etcd.aio.serve`` is the ``await`` twin for ``grpc.aio`` servers. Frameworks that own the
signals pass ``stop=`` (an Event they set) or call ``drain()`` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health as _health
from grpc_health.v1 import health_pb2

from .node import Node

__all__ = ["drain", "drain_aio", "serve", "serve_aio"]

log = logging.getLogger("grpc_etcd.serve")

#: The signals a process manager (systemd, Kubernetes, docker stop) or Ctrl-C sends.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

HEALTH = "grpc.health.v1.Health"

#: ``health=``: a grpcio-health-checking servicer already on the server, ``True`` to have one
#: added (SERVING for "" and each registered service), or ``None`` for no health service.
Health = Any


class _SyncRegistration(Protocol):
    @property
    def node(self) -> Node: ...
    def close(self) -> None: ...


class _AsyncRegistration(Protocol):
    @property
    def node(self) -> Node: ...
    def close(self) -> Awaitable[None]: ...


def _as_list(registration: Any) -> list[Any]:
    if isinstance(registration, Sequence):
        return list(registration)
    return [registration]


def _check_times(grace: float | None, drain_delay: float) -> None:
    if grace is not None and grace < 0:
        raise ValueError(f"grace must be >= 0 seconds or None, got {grace}")
    if drain_delay < 0:
        raise ValueError(f"drain_delay must be >= 0 seconds, got {drain_delay}")


def _services(registrations: list[Any]) -> list[str]:
    return sorted({registration.node.service for registration in registrations})


def _add_health(server: Any, servicer: Any) -> None:
    # A generic handler, because it can be added after start(); the generated
    # add_HealthServicer_to_server also registers methods, which grpc refuses (with a
    # warning) on a started server.
    request, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    codec = {
        "request_deserializer": request.FromString,
        "response_serializer": response.SerializeToString,
    }
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(servicer.Check, **codec),
        "Watch": grpc.unary_stream_rpc_method_handler(servicer.Watch, **codec),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HEALTH, handlers),))


# ------------------------------------------------------------------ sync


def serve(
    server: grpc.Server,
    registration: _SyncRegistration | Sequence[_SyncRegistration],
    *,
    grace: float | None = 10.0,
    drain_delay: float = 1.0,
    health: Health = None,
    stop: threading.Event | None = None,
) -> None:
    """Block until SIGTERM/SIGINT (or until ``stop`` is set), then :func:`drain` and return.

    ``server`` is a started ``grpc.Server``; ``registration`` one ``grpc_etcd.Registration`` or
    several (one per service the server hosts). With ``stop`` given no signal handler is
    installed, so this can run in any thread; without it, it must run in the main thread.
    After the first signal the previous handlers are back, so a second Ctrl-C interrupts the
    drain. ``health=True`` adds a ``grpc.health.v1.Health`` service to ``server``.
    """
    _check_times(grace, drain_delay)
    registrations = _as_list(registration)
    servicer = health
    if health is True:
        servicer = _health.HealthServicer()
        _add_health(server, servicer)
        for service in _services(registrations):
            servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    with _said_on_stderr():
        if stop is None:
            stop = threading.Event()
            with _signals_set(stop):
                _wait_forever(stop)
        else:
            _wait_forever(stop)
        drain(server, registrations, grace=grace, drain_delay=drain_delay, health=servicer)


def drain(
    server: grpc.Server,
    registration: _SyncRegistration | Sequence[_SyncRegistration],
    *,
    grace: float | None = 10.0,
    drain_delay: float = 1.0,
    health: Health = None,
) -> None:
    """Stop losslessly now: NOT_SERVING, deregister, wait ``drain_delay``, ``stop(grace)``."""
    with _draining(registration, grace, drain_delay) as registrations:
        if health is not None and health is not True:
            health.enter_graceful_shutdown()
        if len(registrations) > 1:  # each close is a round trip or two to etcd: all at once
            with ThreadPoolExecutor(len(registrations), thread_name_prefix="drain") as pool:
                list(pool.map(lambda each: each.close(), registrations))
        else:
            for each in registrations:
                each.close()
        time.sleep(drain_delay)
        server.stop(grace).wait()


@contextlib.contextmanager
def _draining(registration: Any, grace: float | None, drain_delay: float) -> Iterator[list[Any]]:
    """What both twins' drains do around their own: check the times, say what the drain does,
    give the registrations as a list, and once it is done, say how long it took."""
    _check_times(grace, drain_delay)
    started = time.monotonic()
    registrations = _as_list(registration)
    keys = ", ".join(str(getattr(each, "key", "?")) for each in registrations) or "nothing"
    log.info(
        "draining: NOT_SERVING, deregistering %s, stopping in %gs (calls in flight get %s)",
        keys,
        drain_delay,
        "as long as they take" if grace is None else f"{grace:g}s",
    )
    yield registrations
    log.info("stopped: drained in %.2fs", time.monotonic() - started)


@contextlib.contextmanager
def _said_on_stderr() -> Iterator[None]:
    """While ``serve()`` runs, its lines reach stderr even when the program configured no
    logging (then nothing would show them); a program that did configure logging decides."""
    if log.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s grpc_etcd.serve: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _wait_forever(stop: threading.Event) -> None:
    # A bounded wait in a loop keeps the main thread responsive to signals on every platform.
    while not stop.wait(1.0):
        pass


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "serve() installs SIGTERM/SIGINT handlers, which only the main thread can; "
            "pass stop=threading.Event() and set it yourself"
        )
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s received", signal.Signals(signum).name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ asyncio


async def serve_aio(
    server: grpc.aio.Server,
    registration: _AsyncRegistration | Sequence[_AsyncRegistration],
    *,
    grace: float | None = 10.0,
    drain_delay: float = 1.0,
    health: Health = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``grpc_etcd.aio.serve``: the ``await`` twin of :func:`serve` for ``grpc.aio`` servers."""
    _check_times(grace, drain_delay)
    registrations = _as_list(registration)
    servicer = health
    if health is True:
        servicer = _health.aio.HealthServicer()  # type: ignore[attr-defined]  # not in the stubs
        _add_health(server, servicer)
        for service in _services(registrations):
            await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    with _said_on_stderr():
        if stop is None:
            stop = asyncio.Event()
            with _loop_signals_set(stop.set):
                await stop.wait()
        else:
            await stop.wait()
        await drain_aio(
            server, registrations, grace=grace, drain_delay=drain_delay, health=servicer
        )


async def drain_aio(
    server: grpc.aio.Server,
    registration: _AsyncRegistration | Sequence[_AsyncRegistration],
    *,
    grace: float | None = 10.0,
    drain_delay: float = 1.0,
    health: Health = None,
) -> None:
    """``grpc_etcd.aio.drain``: the ``await`` twin of :func:`drain`."""
    with _draining(registration, grace, drain_delay) as registrations:
        if health is not None and health is not True:
            result = health.enter_graceful_shutdown()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.gather(*(each.close() for each in registrations))
        await asyncio.sleep(drain_delay)
        await server.stop(grace)


@contextlib.contextmanager
def _loop_signals_set(on_stop: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received", sig.name)
        for each in STOP_SIGNALS:  # a second signal does what it did before serve()
            loop.remove_signal_handler(each)
        on_stop()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
