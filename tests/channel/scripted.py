"""Servers that do what a test scripts, a policy that picks them in a fixed order and records
every done callback, and the one reader of a channel's retry-throttle tokens.

For the table of outcomes (``test_outcomes.py``) and the drift tests: each test scripts what
every node does with each attempt it receives, makes calls through a real BalancedChannel
(either twin) and compares what happened - the nodes picked, the nodes that saw an attempt,
each attempt's done callback, the final status, the throttle's tokens - with what should.

The servers are real grpc servers on loopback, each behind a :class:`~grpc_etcd.testing.TcpProxy`
so a step can drop the connection the way a killed process does. A script is a list of steps,
one per attempt the node receives on the scripted methods (the last one repeats):

- ``ok``: answer (one response; two for server and bidi streams).
- ``ok_after:a,b``: answer once the nodes named have seen an attempt (so that a hedge which
  answers at once cannot be cancelling attempts their servers have not seen yet).
- ``unavailable``: fail at once with UNAVAILABLE and no headers (a trailers-only response).
- ``not_found``: fail at once with NOT_FOUND (an answer no policy retries).
- ``after_headers``: send headers (streams: one response) then fail with UNAVAILABLE.
- ``hang``: never answer; return once the client cancels or the deadline passes.
- ``pushback:MS``: fail with UNAVAILABLE and the trailer ``grpc-retry-pushback-ms: MS``.
- ``drop``: reset the node's connections before answering (the proxy refuses new ones until
  :meth:`Lab.reset`): the attempt fails with UNAVAILABLE having never got a response.

``/test.Script/Ok`` always answers and ``/test.Script/Fail`` always fails with UNAVAILABLE,
whatever the script, for tests that need calls of another method.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from grpc_etcd import Node, Snapshot
from grpc_etcd.demo import api_pb2
from grpc_etcd.policies.base import DoneInfo, Endpoint, Pick
from grpc_etcd.routing import CallInfo
from grpc_etcd.testing import TcpProxy

SERVICE = "test.srv.script"

#: A retryPolicy for every method: UNAVAILABLE is retried, three attempts, short backoffs.
RETRY = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.05s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
NAMES = ("a", "b", "c")
Request = api_pb2.Request
Response = api_pb2.Response

#: The scripted methods by call shape, and the two fixed ones.
METHODS = {
    "unary_unary": "/test.Script/Unary",
    "unary_stream": "/test.Script/ServerStream",
    "stream_unary": "/test.Script/ClientStream",
    "stream_stream": "/test.Script/Bidi",
}
OK_METHOD = "/test.Script/Ok"
FAIL_METHOD = "/test.Script/Fail"


def method(channel: Any, kind: str, name: str | None = None) -> Any:
    """The multicallable of a ``/test.Script`` method on ``channel`` (sync or aio): the
    scripted method of call shape ``kind``, or ``name`` (a full method name) if given."""
    return getattr(channel, kind)(
        name or METHODS[kind],
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def throttle_tokens(channel: Any) -> float | None:
    """The retry throttle's tokens left on ``channel`` (either twin); None without
    ``retryThrottling``. The one place tests read them: if the throttle moves, change only
    this."""
    throttle = channel._resilience._throttle
    return None if throttle is None else float(throttle.tokens)


@dataclass
class Attempt:
    """One attempt as a server saw it."""

    node: str
    method: str
    step: str
    #: The call ended without an answer of ours (the client cancelled or its deadline passed).
    cancelled: bool = False


@dataclass
class Journal:
    """Every attempt the servers saw, in the order they arrived (thread-safe)."""

    attempts: list[Attempt] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, attempt: Attempt) -> None:
        with self._cond:
            self.attempts.append(attempt)
            self._cond.notify_all()

    def changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, check: Any, timeout: float, what: str) -> None:
        """Block until ``check(attempts)`` is true (an event: servers notify on each change)."""
        with self._cond:
            if not self._cond.wait_for(lambda: check(self.attempts), timeout):
                raise AssertionError(f"timed out waiting for {what}: {self.attempts}")

    def nodes(self) -> list[str]:
        with self._cond:
            return [attempt.node for attempt in self.attempts]

    def clear(self) -> None:
        with self._cond:
            self.attempts.clear()


class ScriptedServer:
    """One grpc server named ``name`` that follows its script, reached through a TcpProxy."""

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self.journal = journal
        self.script: list[str] = ["ok"]
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers([self._handlers()])
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.proxy = TcpProxy(f"127.0.0.1:{port}")
        self.address = self.proxy.endpoint

    def stop(self) -> None:
        self.proxy.close()
        self._server.stop(None).wait(5)

    def _next_step(self) -> str:
        with self._lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    # ------------------------------------------------------------ the behaviours

    def _begin(self, method: str, context: grpc.ServicerContext, step: str | None) -> Attempt:
        attempt = Attempt(self.name, method, step or self._next_step())
        self.journal.add(attempt)
        return attempt

    def _fail_or_wait(self, attempt: Attempt, context: grpc.ServicerContext) -> None:
        """The steps that end without an answer (all but ``ok`` and ``after_headers``)."""
        step = attempt.step
        if step == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: scripted UNAVAILABLE")
        if step == "not_found":
            context.abort(grpc.StatusCode.NOT_FOUND, f"{self.name}: scripted NOT_FOUND")
        if step.startswith("pushback:"):
            context.set_trailing_metadata((("grpc-retry-pushback-ms", step.split(":", 1)[1]),))
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: scripted pushback")
        if step in ("hang", "drop"):
            ended = threading.Event()
            if not context.add_callback(ended.set):
                ended.set()  # the call was over before this handler ran (a late hedge)
            if step == "drop":
                self.proxy.cut()
            ended.wait(30)
            attempt.cancelled = True
            self.journal.changed()
            context.abort(grpc.StatusCode.CANCELLED, "ended by the client")
        if step.startswith("ok_after:"):
            names = set(step.split(":", 1)[1].split(","))
            self.journal.wait(lambda seen: names <= {a.node for a in seen}, 10, f"{names}")
            return
        if step not in ("ok", "after_headers"):
            raise AssertionError(f"unknown step {step!r}")

    def _read(self, attempt: Attempt, requests: Iterable[Request]) -> list[Request]:
        """Every request of a request stream. The attempt is in the journal before: a client
        that ends it while its requests are on their way (a lost hedge, the deadline) has
        still sent it, and the journal says it ended without an answer."""
        try:
            return list(requests)
        except grpc.RpcError:
            attempt.cancelled = True
            self.journal.changed()
            raise

    def _answer(self, attempt: Attempt, request: Request) -> Response:
        return Response(output=f"{self.name}|{attempt.step}|{request.input}")

    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(request: Request, context: grpc.ServicerContext) -> Response:
            attempt = self._begin("Unary", context, None)
            self._fail_or_wait(attempt, context)
            if attempt.step == "after_headers":
                context.send_initial_metadata((("scripted", "headers"),))
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: after headers")
            return self._answer(attempt, request)

        def fixed(step: str, name: str) -> Any:
            def handler(request: Request, context: grpc.ServicerContext) -> Response:
                attempt = self._begin(name, context, step)
                self._fail_or_wait(attempt, context)
                return self._answer(attempt, request)

            return handler

        def server_stream(request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
            attempt = self._begin("ServerStream", context, None)
            self._fail_or_wait(attempt, context)
            yield self._answer(attempt, request)
            if attempt.step == "after_headers":
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: after a response")
            yield self._answer(attempt, request)

        def client_stream(requests: Iterable[Request], context: grpc.ServicerContext) -> Response:
            attempt = self._begin("ClientStream", context, None)
            joined = Request(input="".join(r.input for r in self._read(attempt, requests)))
            self._fail_or_wait(attempt, context)
            if attempt.step == "after_headers":
                context.send_initial_metadata((("scripted", "headers"),))
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: after headers")
            return self._answer(attempt, joined)

        def bidi(requests: Iterable[Request], context: grpc.ServicerContext) -> Iterator[Response]:
            # Every request is read first: grpc.aio reports INTERNAL instead of the status now
            # and then when a server ends a call while the client still writes requests.
            attempt = self._begin("Bidi", context, None)
            received = self._read(attempt, requests)
            self._fail_or_wait(attempt, context)
            for number, request in enumerate(received):
                if number and attempt.step == "after_headers":
                    context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: after a response")
                yield self._answer(attempt, request)

        options = {
            "request_deserializer": Request.FromString,
            "response_serializer": Response.SerializeToString,
        }
        return grpc.method_handlers_generic_handler(
            "test.Script",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary, **options),
                "Ok": grpc.unary_unary_rpc_method_handler(fixed("ok", "Ok"), **options),
                "Fail": grpc.unary_unary_rpc_method_handler(
                    fixed("unavailable", "Fail"), **options
                ),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **options),
                "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **options),
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **options),
            },
        )


class Lab:
    """Three scripted servers ``a``, ``b``, ``c`` sharing one journal."""

    def __init__(self) -> None:
        self.journal = Journal()
        self.servers = {name: ScriptedServer(name, self.journal) for name in NAMES}

    def snapshot(self) -> Snapshot:
        """The three nodes, as the registry's watcher would hand them to a channel."""
        nodes = {}
        for name, server in self.servers.items():
            key = f"/{SERVICE.replace('.', '/')}/{name}"
            nodes[key] = Node(SERVICE, name, server.address, "v1", key=key)
        return Snapshot(SERVICE, nodes, 1)

    def reset(self, scripts: dict[str, Sequence[str]] | None = None) -> None:
        """Forget what was seen, give each node its script (default ``ok``), restore proxies."""
        self.journal.clear()
        for name, server in self.servers.items():
            server.script = list((scripts or {}).get(name, ("ok",)))
            server.proxy.restore()

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


class Ordered:
    """A policy that picks nodes in the order ``a``, ``b``, ``c`` (cycling, skipping nodes not
    ready) and records every pick and its done callback, so a test knows which node each
    attempt went to and what its done callback heard.

    :meth:`reset` before each call starts it at ``a`` again. ``built`` is set once a picker
    over all three nodes exists (the channel has connected to every node).
    """

    name = "ordered"

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._position = 0
        self.picks: list[str] = []
        self.done: dict[int, DoneInfo] = {}
        self.built = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self._position = 0
            self.picks = []
            self.done = {}

    def build(self, ready: Sequence[Endpoint[Any]]) -> _OrderedPicker:
        by_name = {endpoint.node.id: endpoint.subchannel for endpoint in ready}
        if len(by_name) == len(NAMES):
            self.built.set()
        return _OrderedPicker(self, by_name)

    def _pick(self, by_name: dict[str, Any]) -> Pick[Any]:
        with self._lock:
            for offset in range(len(NAMES)):
                index = (self._position + offset) % len(NAMES)
                name = NAMES[index]
                if name in by_name:
                    self._position = index + 1
                    number = len(self.picks)
                    self.picks.append(name)
                    return Pick(by_name[name], partial(self._done, number))
        raise AssertionError(f"no node of {NAMES} is ready")

    def _done(self, number: int, info: DoneInfo) -> None:
        with self._lock:
            assert number not in self.done, f"done callback of pick {number} called twice"
            self.done[number] = info
            self._lock.notify_all()

    def wait_done(self, timeout: float = 10) -> list[str]:
        """Wait until every pick's done callback ran; their codes, in pick order."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.done) == len(self.picks), timeout):
                raise AssertionError(f"done callbacks {self.done} for picks {self.picks}")
            return [self.done[i].code for i in range(len(self.picks))]


class _OrderedPicker:
    def __init__(self, policy: Ordered, by_name: dict[str, Any]) -> None:
        self._policy = policy
        self._by_name = by_name

    def pick(self, call: CallInfo) -> Pick[Any]:
        return self._policy._pick(self._by_name)
