"""Server-side helpers: carry the caller's version on to the calls a handler makes.

A service in the middle of a call chain gets ``x-version`` in its incoming metadata; with
:func:`propagate_route` (or :func:`propagate_route_aio` for ``grpc.aio`` servers) installed,
its handlers run with that version propagated, so the calls they make through a
BalancedChannel pick that version too - and send it along in their own metadata - unless the
handler's own ``route()`` or the channel's ``version=`` says otherwise (docs/routing.md, step 2)::

    server = grpc.server(pool, interceptors=[grpc_etcd.server.propagate_route()])
    server = grpc.aio.server(interceptors=[grpc_etcd.server.propagate_route_aio()])

Two functions rather than one with a flag: grpc's sync and asyncio interceptors are different
types with differently shaped methods, and each server accepts only its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .routing import _reset_propagated, _set_propagated, route_from_metadata

__all__ = ["propagate_route", "propagate_route_aio"]

if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _AioServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _AioServerInterceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

_Behavior = Callable[[Any, Any], Any]


def propagate_route() -> grpc.ServerInterceptor[Any, Any]:
    """A ``grpc.ServerInterceptor`` that runs each handler with the caller's ``x-version``
    propagated to the calls it makes (below its own ``route()`` and the channel's ``version=``)."""
    return _PropagateRoute()


def propagate_route_aio() -> grpc.aio.ServerInterceptor[Any, Any]:
    """The ``grpc.aio.ServerInterceptor`` twin of :func:`propagate_route`."""
    return _PropagateRouteAio()


def _route_values(details: grpc.HandlerCallDetails) -> dict[str, str] | None:
    return route_from_metadata(details.invocation_metadata) or None


class _PropagateRoute(_ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        values = _route_values(handler_call_details)
        if handler is None or values is None:
            return handler
        return _rewrap(handler, lambda behavior, streams: _sync_behavior(behavior, values, streams))


class _PropagateRouteAio(_AioServerInterceptor):
    async def intercept_service(  # type: ignore[override]  # grpc-stubs forbids the None
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        values = _route_values(handler_call_details)
        if handler is None or values is None:
            return handler
        return _rewrap(handler, lambda behavior, streams: _aio_behavior(behavior, values, streams))


def _rewrap(handler: _Handler, wrap: Callable[[_Behavior, bool], _Behavior]) -> _Handler:
    """The same handler with its behavior wrapped (through grpc's public constructors)."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **kwargs)
    if handler.request_streaming:
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **kwargs)
    if handler.response_streaming:
        assert handler.unary_stream is not None
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **kwargs)
    assert handler.unary_unary is not None
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **kwargs)


def _routed_context(values: Mapping[str, str]) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(_set_propagated, values)
    return context


class _ContextIterator:
    """Runs each step of a response generator inside ``context`` (where the route is set)."""

    def __init__(self, context: contextvars.Context, iterator: Iterator[Any]) -> None:
        self._context = context
        self._iterator = iterator

    def __iter__(self) -> _ContextIterator:
        return self

    def __next__(self) -> Any:
        return self._context.run(next, self._iterator)


def _sync_behavior(behavior: _Behavior, values: Mapping[str, str], streams: bool) -> _Behavior:
    # Set in the thread that runs the handler (the server's pool), not the interceptor's; a
    # response generator runs a step at a time after the handler returns, so each step too.
    def routed(request: Any, context: Any) -> Any:
        routed_context = _routed_context(values)
        result = routed_context.run(behavior, request, context)
        return _ContextIterator(routed_context, iter(result)) if streams else result

    return routed


def _aio_behavior(behavior: _Behavior, values: Mapping[str, str], streams: bool) -> _Behavior:
    # grpc.aio runs each call in its own task, so setting the ContextVar there is enough.
    if inspect.isasyncgenfunction(behavior):

        async def routed_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            token = _set_propagated(values)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                with contextlib.suppress(ValueError):  # finalized from another context
                    _reset_propagated(token)

        return routed_stream
    if inspect.iscoroutinefunction(behavior):

        async def routed(request: Any, context: Any) -> Any:
            token = _set_propagated(values)
            try:
                return await behavior(request, context)
            finally:
                _reset_propagated(token)

        return routed
    return _sync_behavior(behavior, values, streams)  # a sync handler on an aio server
