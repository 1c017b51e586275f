"""The sync twin driving the call flow against real servers: hedging in every unary form and for
server streams, retries and replays of request streams (the outcome table has the rest)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any, cast

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from recorded import attempts_and_hedges
from waiting import wait_for

import grpc_etcd
from grpc_etcd import Node, Snapshot
from grpc_etcd._channel._flow import CALL_REPLAY_LIMIT
from grpc_etcd.demo.api_pb2 import Request, Response

SERVICE = "test.srv.flow"
KINDS = {
    "unary_unary": "/test.Flow/Unary",
    "unary_stream": "/test.Flow/UnaryStream",
    "stream_unary": "/test.Flow/StreamUnary",
    "stream_stream": "/test.Flow/StreamStream",
}


class Scripted:
    """A server whose every call does what ``mode`` says: ``ok``, ``fail`` (UNAVAILABLE before
    any response), ``fail_once`` (that, for its first call only), ``hold`` (no response until
    ``release()``, or until the client cancels: counted in ``cancelled``)."""

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        self.mode = mode
        self.seen: list[str] = []  # what each call sent (request streams: joined)
        self.cancelled = 0
        self.gate = threading.Event()
        self._cond = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(16))
        self._server.add_generic_rpc_handlers([self._handlers()])
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def stop(self) -> None:
        self.gate.set()
        self._server.stop(None).wait(5)

    def release(self) -> None:
        self.gate.set()

    def wait_seen(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= count, 10), self.seen

    def _answer(self, sent: str, context: grpc.ServicerContext) -> str:
        with self._cond:
            self.seen.append(sent)
            first = len(self.seen) == 1
            self._cond.notify_all()
        mode = self.mode
        if mode == "fail" or (mode == "fail_once" and first):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} fails")
        if mode == "hold":
            while not self.gate.wait(0.01):
                if not context.is_active():
                    with self._cond:
                        self.cancelled += 1
                        self._cond.notify_all()
                    context.abort(grpc.StatusCode.CANCELLED, "gone")
        return f"{self.name}|{sent}"

    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(request: Request, context: grpc.ServicerContext) -> Response:
            return Response(output=self._answer(request.input, context))

        def unary_stream(request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
            output = self._answer(request.input, context)
            for i in range(3):
                yield Response(output=f"{output}{i}")

        def stream_unary(requests: Iterable[Request], context: grpc.ServicerContext) -> Response:
            return Response(output=self._answer(",".join(r.input for r in requests), context))

        def stream_stream(
            requests: Iterable[Request], context: grpc.ServicerContext
        ) -> Iterator[Response]:
            inputs = [r.input for r in requests]
            yield Response(output=self._answer(",".join(inputs), context))

        options = {
            "request_deserializer": Request.FromString,
            "response_serializer": Response.SerializeToString,
        }
        return grpc.method_handlers_generic_handler(
            "test.Flow",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary, **options),
                "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream, **options),
                "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary, **options),
                "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream, **options),
            },
        )


@pytest.fixture
def servers() -> Iterator[list[Scripted]]:
    made = [Scripted(name) for name in "abc"]
    yield made
    for server in made:
        server.stop()


def snapshot(*servers: Scripted, version: str = "v1") -> Snapshot:
    nodes = {}
    for server in servers:
        key = f"/test/srv/flow/{server.name}"
        nodes[key] = Node(SERVICE, server.name, server.address, version, key=key)
    return Snapshot(SERVICE, nodes, 1)


def method(channel: Any, kind: str) -> Any:
    return getattr(channel, kind)(
        KINDS[kind],
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def config(policy: str, **settings: Any) -> dict[str, Any]:
    if policy == "hedgingPolicy":
        body = {"maxAttempts": 2, "hedgingDelay": "0.05s", **settings}
    else:
        body = {
            "maxAttempts": 3,
            "initialBackoff": "0.01s",
            "maxBackoff": "0.05s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
            **settings,
        }
    return {"methodConfig": [{"name": [{"service": "test.Flow"}], policy: body}]}


def ready(channel: grpc_etcd.BalancedChannel, count: int) -> None:
    wait_for(
        lambda: (
            list(channel.subchannel_states().values()).count(grpc.ChannelConnectivity.READY)
            >= count
        ),
        10,
        f"{count} nodes READY",
    )


def requests(*inputs: str) -> Iterator[Request]:
    return (Request(input=text) for text in inputs)


# ------------------------------------------------------------------ hedging

FORMS = ["call", "with_call", "future", "unary_stream"]


def _start(channel: grpc_etcd.BalancedChannel, form: str) -> futures.Future[str]:
    """Start one hedged call of ``form``; the future holds who answered."""
    pool = futures.ThreadPoolExecutor(1)
    if form == "unary_stream":
        stream = method(channel, "unary_stream")
        return pool.submit(lambda: next(iter(stream(Request(input="x"), timeout=10))).output)
    unary = method(channel, "unary_unary")
    if form == "call":
        return pool.submit(lambda: unary(Request(input="x"), timeout=10).output)
    if form == "with_call":
        return pool.submit(lambda: unary.with_call(Request(input="x"), timeout=10)[0].output)
    future = unary.future(Request(input="x"), timeout=10)
    return pool.submit(lambda: future.result().output)


@pytest.mark.parametrize("winner", ["hedge", "first"])
@pytest.mark.parametrize("form", FORMS)
def test_a_hedge_goes_to_an_untried_node_the_first_answer_wins_the_loser_sees_its_cancel(
    servers: list[Scripted], form: str, winner: str
) -> None:
    a, b, _ = servers
    order: list[Scripted] = []
    for server in (a, b):
        server.mode = "hold"
    with grpc_etcd.BalancedChannel(SERVICE, config=config("hedgingPolicy")) as channel:
        channel.update(snapshot(a, b))
        ready(channel, 2)
        answered = _start(channel, form)
        wait_for(lambda: a.seen or b.seen, 10, "the first attempt")
        order.append(a if a.seen else b)
        wait_for(lambda: len(a.seen) + len(b.seen) == 2, 10, "the hedge")
        order.append(b if order[0] is a else a)
        assert len(a.seen) == len(b.seen) == 1  # the hedge went to the node not tried
        won, lost = order if winner == "first" else order[::-1]
        won.release()
        assert answered.result(10).startswith(f"{won.name}|x")
        wait_for(lambda: lost.cancelled == 1, 10, "the losing attempt's server to see the cancel")
        lost.release()


def test_a_hedged_call_that_cannot_start_raises_and_counts_nothing(
    servers: list[Scripted],
) -> None:
    with grpc_etcd.BalancedChannel(SERVICE, config=config("hedgingPolicy")) as channel:
        channel.update(snapshot(servers[0]))
        ready(channel, 1)
        unary, bad = method(channel, "unary_unary"), cast(Any, "no such compression")
        for start in (unary, unary.with_call, unary.future):
            with pytest.raises(KeyError):
                start(Request(input="x"), timeout=10, compression=bad)
        assert unary(Request(input="x"), timeout=10).output == "a|x"
        assert all(not sub.inflight for sub in channel._subs.values())


def test_a_non_fatal_status_sends_the_next_hedge_at_once(servers: list[Scripted]) -> None:
    a, b, _ = servers
    a.mode = "fail"
    hedging = config("hedgingPolicy", maxAttempts=3, hedgingDelay="30s")
    hedging["methodConfig"][0]["hedgingPolicy"]["nonFatalStatusCodes"] = ["UNAVAILABLE"]
    with grpc_etcd.BalancedChannel(SERVICE, policy="round_robin", config=hedging) as channel:
        channel.update(snapshot(a, b))
        ready(channel, 2)
        unary = method(channel, "unary_unary")
        # Without the shortcut every call meeting a would wait 30 s: past its deadline.
        answers = [unary(Request(input=str(i)), timeout=10).output for i in range(10)]
    assert all(answer.startswith("b|") for answer in answers) and len(a.seen) >= 4


def test_a_fatal_status_ends_a_hedged_call(servers: list[Scripted]) -> None:
    a, b, _ = servers
    a.mode = "fail"  # UNAVAILABLE is fatal: no nonFatalStatusCodes
    with grpc_etcd.BalancedChannel(
        SERVICE, policy="round_robin", config=config("hedgingPolicy")
    ) as channel:
        channel.update(snapshot(a, b))
        ready(channel, 2)
        unary = method(channel, "unary_unary")
        codes = set()
        for i in range(6):
            try:
                unary(Request(input=str(i)), timeout=10)
                codes.add("OK")
            except grpc.RpcError as exc:
                codes.add(exc.code().name)
    assert codes == {"OK", "UNAVAILABLE"}


def test_hedges_are_measured_per_attempt_and_counted(
    servers: list[Scripted], metric_reader: InMemoryMetricReader
) -> None:
    a, b, _ = servers
    for server in (a, b):
        server.mode = "hold"
    with grpc_etcd.BalancedChannel(SERVICE, config=config("hedgingPolicy")) as channel:
        channel.update(snapshot(a, b))
        ready(channel, 2)
        answered = _start(channel, "call")
        wait_for(lambda: len(a.seen) + len(b.seen) == 2, 10, "the call and its hedge")
        b.release()
        answered.result(10)
        wait_for(lambda: a.cancelled == 1, 10, "the loser's cancel")
        a.release()
    started, statuses, hedges = attempts_and_hedges(metric_reader)
    assert started == 2 and statuses == ["CANCELLED", "OK"]
    assert (hedges.count, hedges.sum) == (1, 1)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ request streams


@pytest.mark.parametrize("kind", ["stream_unary", "stream_stream"])
def test_request_streams_are_replayed_on_a_retry(servers: list[Scripted], kind: str) -> None:
    servers[2].mode = "fail"
    with grpc_etcd.BalancedChannel(
        SERVICE, policy="round_robin", config=config("retryPolicy")
    ) as channel:
        channel.update(snapshot(*servers))
        ready(channel, 3)
        call = method(channel, kind)
        for i in range(12):
            sent = (f"{i}.{n}" for n in range(3))
            if kind == "stream_unary":
                reply = call(requests(*sent), timeout=10)
            else:
                [reply] = list(call(requests(*sent), timeout=10))
            who, seen = reply.output.split("|")
            assert who in ("a", "b") and seen == f"{i}.0,{i}.1,{i}.2"
    assert servers[2].seen and all(len(seen.split(",")) == 3 for seen in servers[2].seen)


def test_stream_unary_in_every_form(servers: list[Scripted]) -> None:
    a = servers[0]
    a.mode = "fail_once"
    with grpc_etcd.BalancedChannel(SERVICE, config=config("retryPolicy")) as channel:
        channel.update(snapshot(a))
        call = method(channel, "stream_unary")
        assert call(requests("1", "2"), timeout=10).output == "a|1,2"  # the replay
        reply, outcome = call.with_call(requests("3"), timeout=10)
        assert reply.output == "a|3" and outcome.code() == grpc.StatusCode.OK
        future = call.future(requests("4", "5"), timeout=10)
        assert future.result(10).output == "a|4,5" and future.code() == grpc.StatusCode.OK
    assert a.seen == ["1,2", "1,2", "3", "4,5"]


def test_requests_past_the_buffer_commit_the_call_to_its_attempt(servers: list[Scripted]) -> None:
    a = servers[0]
    big = "x" * (CALL_REPLAY_LIMIT // 2)
    with grpc_etcd.BalancedChannel(SERVICE, config=config("retryPolicy")) as channel:
        channel.update(snapshot(a))
        call = method(channel, "stream_unary")
        a.mode = "fail_once"
        assert call(requests(big), timeout=10).output.startswith("a|x")  # kept: replayed
        a.seen.clear()
        a.mode = "fail_once"
        with pytest.raises(grpc.RpcError) as failed:
            call(requests(big, big, big), timeout=10)  # past 256 KiB: not kept, not retried
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(a.seen) == 1


# ------------------------------------------------------------------ the monitor's timers


def test_a_timer_set_while_the_monitor_takes_the_timers_wakes_it(servers: list[Scripted]) -> None:
    # A call's timer (a backoff, a hedge) is added without the channel's lock; the monitor
    # takes the timers added so far, then decides how long to sleep. A timer added between the
    # two must kick it, or it fires at the next poll (up to 0.2 s late: a hedge then found the
    # deadline too near to go). The wrapped take adds one just there, on the monitor's thread.
    kicked: list[bool] = []
    with grpc_etcd.BalancedChannel(SERVICE) as channel:
        channel.update(snapshot(servers[0]))
        ready(channel, 1)
        take = channel._take_incoming

        def take_then_add() -> None:
            take()
            if not kicked and sys._getframe(1).f_code.co_name == "_run":
                channel._call_at(time.monotonic() + 60, lambda: None)
                kicked.append(channel._kick.is_set())

        channel._take_incoming = take_then_add  # type: ignore[method-assign]
        wait_for(lambda: kicked, 10, "the monitor to take its timers")
    assert kicked == [True]
