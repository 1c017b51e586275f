"""The node a call went to, on OpenTelemetry's client spans (``server.address``, ``server.port``).

``opentelemetry-instrumentation-grpc`` wraps every channel grpc makes - so every sub-channel of
a BalancedChannel - with its client interceptor, which names the method on each span but not
the server (up to 0.66b2; later interceptors take a ``host`` and ``port``, which its
instrumentor does not pass). A sub-channel is one node, so when one is opened, each of
OpenTelemetry's interceptors on it is given that node: its ``host`` and ``port`` where it has
them, else a tracer that adds them to the spans it starts. Nothing is done per call on our
side, and a sub-channel without such interceptors is left as it is.

This reads OpenTelemetry's internals (the interceptor's ``_host``/``_port`` or ``_tracer``)
and, for ``grpc.aio``, the channel's interceptor lists (docs/architecture.md, "grpcio
internals"); where they differ, spans go without the node, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["SERVER_ADDRESS", "SERVER_PORT", "name_peer", "peer_attributes"]

#: OpenTelemetry's semantic conventions for the server a client span called.
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

_OTEL = "opentelemetry.instrumentation.grpc"
#: Where a grpc.aio channel keeps its client interceptors, one list per call shape.
_AIO_LISTS = (
    "_unary_unary_interceptors",
    "_unary_stream_interceptors",
    "_stream_unary_interceptors",
    "_stream_stream_interceptors",
)


def peer_attributes(address: str) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of a node's ``host:port`` (``[v6]:port`` too)."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return {SERVER_ADDRESS: address}
    return {SERVER_ADDRESS: host.strip("[]"), SERVER_PORT: int(port)}


def name_peer(channel: Any, address: str) -> int:
    """Have every OpenTelemetry client interceptor on ``channel`` (a sub-channel, sync or
    grpc.aio) name ``address`` on its spans; how many it found."""
    attributes = peer_attributes(address)
    found = 0
    for interceptor in _interceptors(channel):
        if not type(interceptor).__module__.startswith(_OTEL):
            continue
        if hasattr(interceptor, "_host") and hasattr(interceptor, "_port"):
            # It names them itself, under its own semantic conventions' names.
            interceptor._host = attributes[SERVER_ADDRESS]
            interceptor._port = attributes.get(SERVER_PORT)
            found += 1
            continue
        tracer = getattr(interceptor, "_tracer", None)
        if tracer is None or not hasattr(tracer, "start_as_current_span"):
            continue
        if isinstance(tracer, _PeerTracer):
            tracer = tracer.inner
        interceptor._tracer = _PeerTracer(tracer, attributes)
        found += 1
    return found


def _interceptors(channel: Any) -> Iterator[Any]:
    """The interceptors around a sync channel (each wrapper keeps the channel it wraps as
    ``_channel``, its interceptor as ``_interceptor``), or in a grpc.aio channel's lists."""
    for name in _AIO_LISTS:
        found = getattr(channel, name, None)
        if isinstance(found, Iterable):
            yield from found
    wrapper = channel
    while wrapper is not None:
        interceptor = getattr(wrapper, "_interceptor", None)
        if interceptor is not None:
            yield interceptor
        wrapper = getattr(wrapper, "_channel", None)


class _PeerTracer:
    """A tracer whose spans also carry one node's address (the rest is the tracer's own)."""

    __slots__ = ("_attributes", "inner")

    def __init__(self, inner: Any, attributes: dict[str, str | int]) -> None:
        self.inner = inner
        self._attributes = attributes

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) > 3:  # (name, context, kind, attributes, ...): attributes given in place
            args = (*args[:3], {**(args[3] or {}), **self._attributes}, *args[4:])
        else:
            kwargs["attributes"] = {**(kwargs.get("attributes") or {}), **self._attributes}
        return self.inner.start_as_current_span(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
