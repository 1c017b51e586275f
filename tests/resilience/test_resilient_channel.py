"""Health, outlier ejection and retries in a real BalancedChannel against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from recorded import points
from server_process import SERVICE, Load, ServerProcess, who

import grpc_etcd
import grpc_etcd.aio
import grpc_etcd.metrics
from grpc_etcd import Node, Snapshot
from grpc_etcd.config import parse_config
from grpc_etcd.demo import api_pb2, api_pb2_grpc
from grpc_etcd.testing import EtcdServer

Request = api_pb2.Request
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RETRY = {
    "methodConfig": [
        {
            "name": [{"service": "proto.Api"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


class Api(api_pb2_grpc.ApiServicer):
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.calls = 0

    def ApiTest(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls += 1
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} fails")
        return api_pb2.Response(output=f"{self.name}||{request.input}")


def _stream_handler(api: Api) -> grpc.GenericRpcHandler:
    def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        first = api.ApiTest(request, context)
        for i in range(3):
            yield api_pb2.Response(output=f"{first.output}{i}")

    handler = grpc.unary_stream_rpc_method_handler(
        unary_stream,
        request_deserializer=Request.FromString,
        response_serializer=api_pb2.Response.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("test.Echo", {"UnaryStream": handler})


class Server:
    """An in-process server with the demo Api and a health servicer."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.api = Api(name, fail)
        self.health = health.HealthServicer()
        self.health.set(SERVICE, SERVING)
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        api_pb2_grpc.add_ApiServicer_to_server(self.api, self.server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_generic_rpc_handlers([_stream_handler(self.api)])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made = [Server("a"), Server("b"), Server("c", fail=True)]
    yield made
    for each in made:
        each.server.stop(None)


def snapshot(*servers: Server) -> Snapshot:
    nodes = {}
    for server in servers:
        key = f"/test/srv/echo/{server.api.name}"
        nodes[key] = Node(SERVICE, server.api.name, server.address, "v1", key=key)
    return Snapshot(SERVICE, nodes, 1)


def call(channel: grpc_etcd.BalancedChannel) -> str:
    stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
    return who(reply)


def test_a_not_serving_node_gets_no_calls_until_serving_again(servers: list[Server]) -> None:
    a, b, _ = servers
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.configure(parse_config({"healthCheckConfig": {"serviceName": SERVICE}}))
        channel.update(snapshot(a, b))
        seen: set[str] = set()
        deadline = time.monotonic() + 5
        while seen != {"a", "b"}:  # each turns usable when its first SERVING arrives
            assert time.monotonic() < deadline, f"only {seen} answered"
            seen.add(call(channel))
        b.health.set(SERVICE, NOT_SERVING)
        deadline = time.monotonic() + 5
        while "b" in {call(channel) for _ in range(5)} and time.monotonic() < deadline:
            pass  # the Watch stream brings NOT_SERVING within milliseconds
        assert Counter(call(channel) for _ in range(100)) == {"a": 100}
        b.health.set(SERVICE, SERVING)
        deadline = time.monotonic() + 5
        while "b" not in {call(channel) for _ in range(10)}:
            assert time.monotonic() < deadline, "b never came back"


def test_a_failing_node_is_ejected_within_ten_calls(servers: list[Server]) -> None:
    config = {
        "outlierDetection": {
            "interval": "10s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 34,
            "consecutiveErrors": 3,
        }
    }
    failures = 0
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.configure(parse_config(config))
        channel.update(snapshot(*servers))
        for _ in range(200):
            try:
                call(channel)
            except grpc.RpcError:
                failures += 1
    assert failures == 3  # consecutiveErrors: the third failure ejects it
    assert servers[2].api.calls == 3


def test_retry_policy_turns_a_failing_node_into_successes(
    servers: list[Server], metric_reader: InMemoryMetricReader
) -> None:
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.configure(parse_config(RETRY))
        channel.update(snapshot(*servers))
        answered = Counter(call(channel) for _ in range(100))
    assert set(answered) == {"a", "b"} and sum(answered.values()) == 100
    failed_first = servers[2].api.calls
    assert failed_first > 10  # it was picked, failed, and the retry went elsewhere
    [retries] = points(metric_reader)["grpc.client.call.retries"]
    # One retry per call that first met c: the retry avoids the node it tried.
    assert (retries.count, retries.sum) == (failed_first, failed_first)  # type: ignore[attr-defined]


def test_without_a_policy_the_failing_node_fails_calls(servers: list[Server]) -> None:
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.update(snapshot(*servers))
        with pytest.raises(grpc.RpcError):
            for _ in range(100):
                call(channel)


def test_kill9_of_one_of_three_with_a_retry_policy_fails_no_call(etcd: EtcdServer) -> None:
    processes = [ServerProcess(etcd.endpoint, name) for name in ("a", "b", "c")]
    try:
        with grpc_etcd.Registry(etcd.endpoint) as registry:
            channel = registry.channel(SERVICE, config=RETRY)
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            stub.ApiTest(Request(input="first"), timeout=5, wait_for_ready=True)
            with Load(channel) as load:
                deadline = time.monotonic() + 10
                while load.answered["a"] < 50 and time.monotonic() < deadline:
                    time.sleep(0.01)
                processes[0].kill()
                after = load.answered.total()
                while load.answered.total() < after + 300 and time.monotonic() < deadline + 10:
                    time.sleep(0.01)
    finally:
        for process in processes:
            process.kill()
    assert load.failures == []
    assert load.answered["a"] >= 50 and load.answered["b"] + load.answered["c"] >= 300


def test_aio_health_and_ejection(servers: list[Server]) -> None:
    a, b, c = servers
    config = {
        "healthCheckConfig": {"serviceName": SERVICE},
        "outlierDetection": {
            "interval": "10s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 34,
            "consecutiveErrors": 3,
        },
    }

    async def main() -> None:
        async with grpc_etcd.aio.BalancedChannel(SERVICE, policy="version") as channel:
            channel.configure(parse_config(config))
            channel.update(snapshot(a, b, c))
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]

            async def one() -> str:
                reply = await stub.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
                return who(reply)

            failures = 0
            answered: Counter[str] = Counter()
            for _ in range(100):
                try:
                    answered[await one()] += 1
                except grpc.aio.AioRpcError:
                    failures += 1
            assert failures == 3 and set(answered) == {"a", "b"}
            b.health.set(SERVICE, NOT_SERVING)
            deadline = time.monotonic() + 5
            while "b" in {await one() for _ in range(5)}:
                assert time.monotonic() < deadline, "b still picked"
            assert {await one() for _ in range(50)} == {"a"}

    asyncio.run(main())


def test_aio_retry_policy_turns_a_failing_node_into_successes(servers: list[Server]) -> None:
    async def main() -> Counter[str]:
        async with grpc_etcd.aio.BalancedChannel(SERVICE, policy="version") as channel:
            channel.configure(parse_config(RETRY))
            channel.update(snapshot(*servers))
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            answered: Counter[str] = Counter()
            for _ in range(100):
                call = stub.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
                reply = await call
                assert await call.code() == grpc.StatusCode.OK
                answered[who(reply)] += 1
            no_policy = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            channel.configure(None)
            with pytest.raises(grpc.aio.AioRpcError):
                for _ in range(100):
                    await no_policy.ApiTest(Request(input="x"), timeout=5)
            return answered

    answered = asyncio.run(main())
    assert set(answered) == {"a", "b"} and sum(answered.values()) == 100
    assert servers[2].api.calls > 10


def test_calls_by_node_status_and_version_and_nodes_by_state(
    servers: list[Server], metric_reader: InMemoryMetricReader
) -> None:
    a, _, c = servers
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.update(snapshot(a, c))
        outcomes: Counter[str] = Counter()
        for _ in range(40):
            try:
                outcomes[call(channel)] += 1
            except grpc.RpcError:
                outcomes["failed"] += 1
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError):  # no v9 node: refused at the pick
            stub.ApiTest(Request(input="x"), timeout=5, metadata=[("x-version", "v9")])
    recorded = points(metric_reader)
    by_node = {
        (
            p.attributes["grpc_etcd.node"],
            p.attributes["grpc.status"],
            p.attributes["grpc_etcd.version"],
        ): p.count  # type: ignore[index, attr-defined]
        for p in recorded["grpc.client.attempt.duration"]
    }
    assert by_node == {
        (a.address, "OK", "v1"): outcomes["a"],
        (c.address, "UNAVAILABLE", "v1"): outcomes["failed"],
    }
    nodes = {p.attributes["grpc_etcd.state"]: p.value for p in recorded["grpc_etcd.lb.nodes"]}  # type: ignore[index, attr-defined]
    assert nodes["ready"] == 2 and nodes["ejected"] == 0
    picks = {p.attributes["grpc_etcd.result"]: p.value for p in recorded["grpc_etcd.lb.picks"]}  # type: ignore[index, attr-defined]
    assert picks == {"ok": 40, "unavailable": 1}


def test_health_and_ejection_emptying_a_subset_bring_the_fallback(servers: list[Server]) -> None:
    a, b, c = servers  # c fails every call
    config = {
        "healthCheckConfig": {"serviceName": SERVICE},
        "outlierDetection": {"maxEjectionPercent": 50, "consecutiveErrors": 2},
        "fallback": [{"version": "v1"}],
    }
    nodes = {}
    for server, version in ((a, "v1"), (b, "v2"), (c, "v3")):
        key = f"/test/srv/echo/{server.api.name}"
        nodes[key] = Node(SERVICE, server.api.name, server.address, version, key=key)
    with grpc_etcd.BalancedChannel(SERVICE, config=config) as channel:
        channel.update(Snapshot(SERVICE, nodes, 1))
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]

        def to(version: str) -> str:
            metadata = [("x-version", version)]
            reply = stub.ApiTest(
                Request(input="x"), timeout=5, metadata=metadata, wait_for_ready=True
            )
            return who(reply)

        assert to("v2") == "b"
        b.health.set(SERVICE, NOT_SERVING)
        deadline = time.monotonic() + 5
        while to("v2") != "a":
            assert time.monotonic() < deadline, "v2 never fell back to v1"
        for _ in range(2):  # two failures in a row eject c, the only v3 node
            with pytest.raises(grpc.RpcError):
                to("v3")
        assert {to("v3") for _ in range(20)} == {"a"}


def test_server_streams_are_retried_before_their_first_response(servers: list[Server]) -> None:
    retry = {"methodConfig": [{**RETRY["methodConfig"][0], "name": [{"service": "test.Echo"}]}]}
    with grpc_etcd.BalancedChannel(SERVICE, config=retry) as channel:
        channel.update(snapshot(*servers))
        stream = channel.unary_stream(
            "/test.Echo/UnaryStream",
            request_serializer=Request.SerializeToString,
            response_deserializer=api_pb2.Response.FromString,
        )
        for _ in range(50):
            call = stream(Request(input="x"), timeout=5, wait_for_ready=True)
            outputs = [reply.output for reply in call]
            assert len(outputs) == 3 and outputs[0].split("|")[0] in ("a", "b")
            assert call.code() == grpc.StatusCode.OK
    assert servers[2].api.calls > 5  # picked, failed before its first response, retried


def test_aio_server_streams_are_retried_before_their_first_response(
    servers: list[Server],
) -> None:
    retry = {"methodConfig": [{**RETRY["methodConfig"][0], "name": [{"service": "test.Echo"}]}]}

    async def main() -> None:
        async with grpc_etcd.aio.BalancedChannel(SERVICE, config=retry) as channel:
            channel.update(snapshot(*servers))
            stream = channel.unary_stream(
                "/test.Echo/UnaryStream",
                request_serializer=Request.SerializeToString,
                response_deserializer=api_pb2.Response.FromString,
            )
            for i in range(50):
                call = stream(Request(input="x"), timeout=5, wait_for_ready=True)
                if i % 2:
                    outputs = [reply.output async for reply in call]
                else:
                    outputs = []
                    while (reply := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                        outputs.append(reply.output)
                assert len(outputs) == 3 and outputs[0].split("|")[0] in ("a", "b")
                assert await call.code() == grpc.StatusCode.OK

    asyncio.run(main())
    assert servers[2].api.calls > 5


def test_retry_throttling_bounds_the_retries_of_calls_on_many_threads() -> None:
    # Every node fails: each failure takes a token, and with maxTokens 10 only the first four
    # failures (tokens left 9..6, more than half) may be retried, in whatever order the
    # threads' failures come. A token lost to a race would let more through.
    failing = [Server(name, fail=True) for name in ("x", "y", "z")]
    policy = {**RETRY["methodConfig"][0]["retryPolicy"], "maxAttempts": 5}  # type: ignore[dict-item]
    config = {
        "methodConfig": [{"name": [{"service": "proto.Api"}], "retryPolicy": policy}],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
    try:
        with grpc_etcd.BalancedChannel(SERVICE, config=config) as channel:
            channel.update(snapshot(*failing))
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]

            def calls() -> int:
                failed = 0
                for _ in range(10):
                    try:
                        stub.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
                    except grpc.RpcError:
                        failed += 1
                return failed

            with futures.ThreadPoolExecutor(8) as pool:
                failed = sum(pool.map(lambda _: calls(), range(8)))
    finally:
        for server in failing:
            server.server.stop(None)
    assert failed == 80
    assert sum(server.api.calls for server in failing) == 80 + 4


def _nodes(*processes: ServerProcess) -> Snapshot:
    nodes = {p.key: Node(SERVICE, p.name, p.address, "v1", key=p.key) for p in processes}
    return Snapshot(SERVICE, nodes, 1)


def test_aio_calls_without_a_policy_are_retried_transparently_after_a_kill9(
    etcd: EtcdServer,
) -> None:
    # Every call starts on a (the only node), b joins, a is killed with the calls on it: they
    # never got an answer, so each is sent once more, to b. No retry policy anywhere.
    a, b = ServerProcess(etcd.endpoint, "a"), ServerProcess(etcd.endpoint, "b")

    async def main() -> list[str]:
        async with grpc_etcd.aio.BalancedChannel(SERVICE) as channel:
            channel.update(_nodes(a))
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            await stub.ApiTest(Request(input="first"), timeout=5, wait_for_ready=True)
            stream = channel.unary_stream(
                "/test.Echo/UnaryStream",
                request_serializer=Request.SerializeToString,
                response_deserializer=api_pb2.Response.FromString,
            )
            unary = [stub.ApiTest(Request(input="sleep:3"), timeout=20) for _ in range(4)]
            streams = [stream(Request(input="sleep:3"), timeout=20) for _ in range(2)]
            begun = {await asyncio.to_thread(a.read_line, 10) for _ in range(6)}
            assert begun == {"begin sleep:3"}  # all six are on a
            channel.update(_nodes(a, b))
            deadline = time.monotonic() + 10
            while channel.subchannel_states().get(b.address) != grpc.ChannelConnectivity.READY:
                assert time.monotonic() < deadline, "b never became ready"
                await asyncio.sleep(0.005)
            a.kill()
            outputs = [str((await call).output) for call in unary]
            outputs += [str((await streams[0].read()).output)]
            outputs += [str(reply.output) async for reply in streams[1]]
            assert await unary[0].code() == grpc.StatusCode.OK
            return outputs

    try:
        outputs = asyncio.run(main())
    finally:
        a.kill()
        b.kill()
    assert [o.split("|")[0] for o in outputs] == ["b"] * 8
    assert len(outputs) == 8  # 4 unary, the first of one stream, all 3 of the other


def test_futures_are_retried_per_the_policy_and_keep_the_future_semantics(
    servers: list[Server],
) -> None:
    with grpc_etcd.BalancedChannel(SERVICE, policy="version") as channel:
        channel.configure(parse_config(RETRY))
        channel.update(snapshot(*servers))
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        call(channel)  # every node connected
        done: list[Any] = []
        all_done = threading.Event()

        def finished(future: Any) -> None:
            done.append(future)
            if len(done) == 100:
                all_done.set()

        pending = []
        for _ in range(100):
            future = stub.ApiTest.future(Request(input="x"), timeout=5)
            future.add_done_callback(finished)
            pending.append(future)
        answered = Counter(f.result(timeout=10).output.split("|")[0] for f in pending)
        assert all(f.done() and not f.running() and f.exception() is None for f in pending)
        assert {f.code() for f in pending} == {grpc.StatusCode.OK}
        assert all_done.wait(5), f"{len(done)} done callbacks"  # they run on grpc's threads
        assert sorted(map(id, done)) == sorted(map(id, pending))
        channel.configure(None)  # no policy: c's failures are the calls' outcome
        failed = [stub.ApiTest.future(Request(input="x"), timeout=5) for _ in range(60)]
        codes = Counter(f.exception(timeout=10) is None for f in failed)
    assert set(answered) == {"a", "b"} and sum(answered.values()) == 100
    assert servers[2].api.calls > 10
    assert codes[False] > 5  # without a policy they fail


def test_futures_without_a_policy_are_retried_transparently_after_a_kill9(
    etcd: EtcdServer,
) -> None:
    a, b = ServerProcess(etcd.endpoint, "a"), ServerProcess(etcd.endpoint, "b")
    try:
        with grpc_etcd.BalancedChannel(SERVICE) as channel:
            channel.update(_nodes(a))
            stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
            stub.ApiTest(Request(input="first"), timeout=5, wait_for_ready=True)
            pending = [stub.ApiTest.future(Request(input="sleep:3"), timeout=20) for _ in range(4)]
            assert {a.read_line(10) for _ in range(4)} == {"begin sleep:3"}  # all on a
            channel.update(_nodes(a, b))
            deadline = time.monotonic() + 10
            while channel.subchannel_states().get(b.address) != grpc.ChannelConnectivity.READY:
                assert time.monotonic() < deadline, "b never became ready"
                time.sleep(0.005)
            a.kill()
            outputs = [f.result(timeout=15).output for f in pending]
            cancelled = stub.ApiTest.future(Request(input="sleep:3"), timeout=20)
            assert b.read_line(10) == "begin sleep:3"
            assert cancelled.cancel() and cancelled.cancelled() and cancelled.done()
            with pytest.raises(grpc.FutureCancelledError):
                cancelled.result()
    finally:
        a.kill()
        b.kill()
    assert [o.split("|")[0] for o in outputs] == ["b"] * 4


def test_an_ejection_publishes_its_picker_on_the_monitor_not_the_callers_thread(
    servers: list[Server],
) -> None:
    config = {"outlierDetection": {"maxEjectionPercent": 50, "consecutiveErrors": 1}}
    with grpc_etcd.BalancedChannel(SERVICE, policy="round_robin", config=config) as channel:
        channel.update(snapshot(*servers))
        publishers: list[threading.Thread] = []
        publish = channel._publish

        def recorded() -> None:
            publishers.append(threading.current_thread())
            publish()

        channel._publish = recorded  # type: ignore[method-assign]
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 5
        while not channel._resilience.is_ejected(servers[2].address):
            assert time.monotonic() < deadline, "c was never ejected"
            with contextlib.suppress(grpc.RpcError):  # round robin: c's first call ejects it
                stub.ApiTest(Request(input="x"), timeout=5, wait_for_ready=True)
        while not publishers:
            assert time.monotonic() < deadline, "no picker without c"
            time.sleep(0.005)
        assert {call(channel) for _ in range(20)} == {"a", "b"}
        assert threading.current_thread() not in publishers  # (close() publishes on it)
