"""The sync BalancedChannel against real grpc servers on loopback, fed hand-made snapshots."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from echo_servers import (
    FAST_RECONNECT,
    SERVICE,
    EchoServer,
    Request,
    dead_node,
    echo,
    free_port,
    snapshot,
    version_seen,
    who,
)
from waiting import wait_for

from grpc_etcd import BalancedChannel, Node, Snapshot, route
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.policies import NO_MATCH_DETAILS, Pick, VersionPolicy
from grpc_etcd.policies.base import Endpoint, Picker

Start = Callable[..., EchoServer]


@pytest.fixture
def channel() -> Iterator[BalancedChannel]:
    with BalancedChannel(SERVICE, options=FAST_RECONNECT) as ch:
        yield ch


def call_soon(fn: Callable[[], Any], timeout: float = 10) -> Any:
    """Run a call that must not hang in a thread; fail the test (not time out) if it does."""
    with futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout)


def ready(channel: BalancedChannel, *servers: EchoServer) -> None:
    """Wait until the channel's connections to ``servers`` are READY."""

    def all_ready() -> bool:
        states = channel.subchannel_states()
        return all(states.get(s.address) == grpc.ChannelConnectivity.READY for s in servers)

    wait_for(all_ready, 10, f"READY connections to {[s.name for s in servers]}")


# ------------------------------------------------------------------ routing


def test_each_version_reaches_only_its_servers_and_spreads(
    start_server: Start, channel: BalancedChannel
) -> None:
    a1, a2, b1, b2 = (start_server(n) for n in ("a1", "a2", "b1", "b2"))
    channel.update(snapshot((a1, "v1"), (a2, "v1"), (b1, "v2"), (b2, "v2")))
    stub = ApiStub(channel)
    req = Request(input="x")

    by_metadata = Counter(
        who(stub.ApiTest(req, metadata=[("x-version", "v1")], timeout=5)) for _ in range(1000)
    )
    with route(version="v2"):
        by_route = Counter(who(stub.ApiTest(req, timeout=5)) for _ in range(1000))
    anyone = Counter(who(stub.ApiTest(req, timeout=5)) for _ in range(400))

    assert set(by_metadata) == {"a1", "a2"}
    assert set(by_route) == {"b1", "b2"}
    # Binomial(1000, 0.5) has sd 16: 350 is nine of them away from fair.
    assert min(by_metadata.values()) > 350
    assert min(by_route.values()) > 350
    assert set(anyone) == {"a1", "a2", "b1", "b2"}
    assert min(anyone.values()) > 50
    # route()'s version travelled in the metadata; version-less calls sent none.
    assert b1.calls["v2"] + b2.calls["v2"] == 1000
    assert a1.calls["v1"] + a2.calls["v1"] == 1000
    assert sum(s.calls[""] for s in (a1, a2, b1, b2)) == 400


def test_metadata_beats_route_beats_channel_default(start_server: Start) -> None:
    a, b, c = start_server("a"), start_server("b"), start_server("c")
    with BalancedChannel(SERVICE, version="v3") as channel:
        channel.update(snapshot((a, "v1"), (b, "v2"), (c, "v3")))
        stub = ApiStub(channel)
        req = Request(input="x")
        assert who(stub.ApiTest(req, timeout=5)) == "c"
        with route(version="v2"):
            assert who(stub.ApiTest(req, timeout=5)) == "b"
            answer = stub.ApiTest(req, metadata=[("x-version", "v1")], timeout=5)
            assert (who(answer), version_seen(answer)) == ("a", "v1")
        # One x-version only, even when route() and the metadata both name one.
        assert all(list(m).count("x-version") == 1 for m in a.metadata)
        assert c.calls == {"v3": 1}


def test_no_match_fails_at_once_with_the_seeds_details(
    start_server: Start, channel: BalancedChannel
) -> None:
    channel.update(snapshot((start_server("a"), "v1")))
    stub = ApiStub(channel)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call_soon(lambda: stub.ApiTest(Request(input="x"), metadata=[("x-version", "v2")]))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == NO_MATCH_DETAILS
    assert time.monotonic() - started < 1


def test_no_deadline_and_nothing_registered_fails_at_once(channel: BalancedChannel) -> None:
    channel.update(Snapshot(SERVICE, {}, 7))
    stub = ApiStub(channel)
    for metadata in (None, [("x-version", "v1")]):
        with pytest.raises(grpc.RpcError) as info:
            call_soon(lambda md=metadata: stub.ApiTest(Request(input="x"), metadata=md), 5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == NO_MATCH_DETAILS


def test_first_call_on_a_fresh_channel_succeeds(start_server: Start) -> None:
    a, b = start_server("a"), start_server("b")
    nodes = snapshot((a, "v1"), (b, "v2"))
    for _ in range(20):
        with BalancedChannel(SERVICE) as channel:
            channel.update(nodes)  # connections are still being made when the call starts
            stub = ApiStub(channel)
            assert (
                who(stub.ApiTest(Request(input="x"), metadata=[("x-version", "v1")], timeout=5))
                == "a"
            )
            assert (
                who(stub.ApiTest(Request(input="x"), metadata=[("x-version", "v2")], timeout=5))
                == "b"
            )


def test_calls_wait_for_the_first_snapshot(start_server: Start, channel: BalancedChannel) -> None:
    a = start_server("a")
    stub = ApiStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ApiTest(Request(input="x"), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    with futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stub.ApiTest, Request(input="x"), timeout=10)
        assert not waiting.done()
        channel.update(snapshot((a, "v1")))
        assert who(waiting.result(10)) == "a"


# ------------------------------------------------------------------ node set changes


def test_removing_a_node_loses_none_of_its_calls_in_flight(
    start_server: Start, channel: BalancedChannel
) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v1")))
    ready(channel, a, b)
    stub = ApiStub(channel)
    blocked = Request(input="block")
    # Half the calls as futures, half as blocking calls in threads: both are counted in flight.
    pending = [stub.ApiTest.future(blocked, timeout=30) for _ in range(10)]
    with futures.ThreadPoolExecutor(10) as pool:
        pending += [pool.submit(stub.ApiTest, blocked, timeout=30) for _ in range(10)]
        wait_for(lambda: a.blocked + b.blocked == 20, 10, "20 calls held by the servers")
        assert a.blocked > 0

        channel.update(snapshot((b, "v1"), revision=2))
        # The new picker is in place when update() returns: nothing new goes to a.
        assert {who(stub.ApiTest(Request(input="x"), timeout=5)) for _ in range(50)} == {"b"}
        a.gate.set()
        b.gate.set()
        answers = Counter(who(call.result(10)) for call in pending)
    assert answers["a"] == a.blocked
    assert sum(answers.values()) == 20
    # a's connection closes once its calls are done, not before.
    wait_for(lambda: not channel._retired, 5, "the removed node's connection to close")


def test_a_removed_nodes_calls_are_cut_after_drain_timeout(start_server: Start) -> None:
    a = start_server("a")
    with BalancedChannel(SERVICE, drain_timeout=0.3) as channel:
        channel.update(snapshot((a, "v1")))
        call = ApiStub(channel).ApiTest.future(Request(input="block"), timeout=30)
        a.wait_blocked(1)
        started = time.monotonic()
        channel.update(Snapshot(SERVICE, {}, 2))
        with pytest.raises(grpc.RpcError) as info:
            call.result(10)
        assert info.value.code() == grpc.StatusCode.CANCELLED
        assert 0.25 < time.monotonic() - started < 3


def test_a_restarted_server_is_used_again(start_server: Start, channel: BalancedChannel) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v1")))
    ready(channel, a, b)
    stub = ApiStub(channel)
    req = Request(input="x")

    a.stop()
    wait_for(
        lambda: channel.subchannel_states()[a.address] != grpc.ChannelConnectivity.READY,
        5,
        "the channel to see a go",
    )
    assert {who(stub.ApiTest(req, timeout=5)) for _ in range(50)} == {"b"}

    a.start(a.port)  # same port, same node record: no snapshot change
    wait_for(lambda: who(stub.ApiTest(req, timeout=5)) == "a", 15, "a call answered by a")
    assert Counter(who(stub.ApiTest(req, timeout=5)) for _ in range(200))["a"] > 50


def test_records_with_one_address_share_one_connection(
    start_server: Start, channel: BalancedChannel
) -> None:
    a = start_server("a")
    channel.update(snapshot((a, "v1", "old"), (a, "v2", "new")))
    stub = ApiStub(channel)
    for version in ("v1", "v2"):
        answer = stub.ApiTest(Request(input="x"), metadata=[("x-version", version)], timeout=5)
        assert (who(answer), version_seen(answer)) == ("a", version)
    (sub,) = channel._subs.values()
    channel.update(snapshot((a, "v2", "new"), revision=2))  # the old key expires
    assert channel._subs[a.address] is sub and not channel._retired
    with pytest.raises(grpc.RpcError) as info:
        stub.ApiTest(Request(input="x"), metadata=[("x-version", "v1")], timeout=5)
    assert info.value.details() == NO_MATCH_DETAILS


# ------------------------------------------------------------------ waiting and deadlines


def test_unreachable_nodes_fail_fast_unless_wait_for_ready(
    start_server: Start, channel: BalancedChannel
) -> None:
    port = free_port()
    channel.update(dead_node("v1", port))
    stub = ApiStub(channel)
    req = Request(input="x")

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call_soon(lambda: stub.ApiTest(req, timeout=20))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in info.value.details()
    assert time.monotonic() - started < 5

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.ApiTest(req, timeout=0.5, wait_for_ready=True)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 < time.monotonic() - started < 3

    with futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stub.ApiTest, req, timeout=20, wait_for_ready=True)
        assert not waiting.done()
        server = start_server("late", port)
        answer = waiting.result(20)
    assert who(answer) == "late" and server.calls["v1"] == 0  # no version asked, none sent


# ------------------------------------------------------------------ the grpc.Channel interface


def test_streaming_kinds_with_call_and_future(
    start_server: Start, channel: BalancedChannel
) -> None:
    a, b = start_server("a"), start_server("b")
    channel.update(snapshot((a, "v1"), (b, "v2")))
    v2 = [("x-version", "v2")]

    responses = list(echo(channel, "unary_stream")(Request(input="s"), metadata=v2, timeout=5))
    assert [r.output for r in responses] == ["b|v2|s0", "b|v2|s1", "b|v2|s2"]

    requests = [Request(input=c) for c in "abc"]
    assert (
        echo(channel, "stream_unary")(iter(requests), metadata=v2, timeout=5).output == "b|v2|abc"
    )
    response, call = echo(channel, "stream_unary").with_call(iter(requests), metadata=v2, timeout=5)
    assert response.output == "b|v2|abc" and call.code() == grpc.StatusCode.OK
    assert (
        echo(channel, "stream_unary").future(iter(requests), metadata=v2, timeout=5).result().output
        == "b|v2|abc"
    )

    outputs = [
        r.output for r in echo(channel, "stream_stream")(iter(requests), metadata=v2, timeout=5)
    ]
    assert outputs == ["b|v2|a", "b|v2|b", "b|v2|c"]

    stub = ApiStub(channel)
    response, call = stub.ApiTest.with_call(Request(input="w"), metadata=v2, timeout=5)
    assert who(response) == "b" and call.code() == grpc.StatusCode.OK
    assert who(stub.ApiTest.future(Request(input="f"), metadata=v2, timeout=5).result()) == "b"
    assert all(not sub.inflight for sub in channel._subs.values())


def test_failed_streams_raise_when_read(start_server: Start, channel: BalancedChannel) -> None:
    channel.update(snapshot((start_server("a"), "v1")))
    v9 = [("x-version", "v9")]
    for kind, arg in (("unary_stream", Request()), ("stream_stream", iter([Request()]))):
        call = echo(channel, kind)(arg, metadata=v9)
        with pytest.raises(grpc.RpcError) as info:
            next(iter(call))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):
        echo(channel, "stream_unary")(iter([Request()]), metadata=v9)


def test_failed_pick_is_an_rpc_error_a_call_and_a_future(
    start_server: Start, channel: BalancedChannel
) -> None:
    channel.update(snapshot((start_server("a"), "v1")))
    failed = ApiStub(channel).ApiTest.future(Request(input="x"), metadata=[("x-version", "v2")])
    assert isinstance(failed, grpc.RpcError)
    assert isinstance(failed, grpc.Call)
    assert isinstance(failed, grpc.Future)
    assert failed.done() and not failed.running() and not failed.cancelled()
    assert not failed.is_active() and not failed.cancel()
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.details() == NO_MATCH_DETAILS
    assert failed.initial_metadata() == () and failed.trailing_metadata() == ()
    assert failed.exception() is failed
    assert failed.traceback() is not None
    with pytest.raises(grpc.RpcError) as info:
        failed.result()
    assert info.value is failed
    seen: list[Any] = []
    failed.add_done_callback(seen.append)
    assert seen == [failed]
    assert "no match found conn" in str(failed)


class _Recorder(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        new = details._replace(metadata=[*(details.metadata or ()), ("x-trace", "t1")])
        outcome = continuation(new, request)
        self.outcomes.append(outcome)
        return outcome


def test_intercept_channel_and_channel_ready_future(
    start_server: Start, channel: BalancedChannel
) -> None:
    a = start_server("a")
    ready_future = grpc.channel_ready_future(channel)
    assert not ready_future.done()
    channel.update(snapshot((a, "v1")))
    ready_future.result(timeout=10)

    recorder = _Recorder()
    stub = ApiStub(grpc.intercept_channel(channel, recorder))
    with route(version="v1"):
        assert who(stub.ApiTest(Request(input="x"), timeout=5)) == "a"
    assert a.metadata[-1]["x-trace"] == "t1" and a.metadata[-1]["x-version"] == "v1"
    # A failed pick reaches the interceptor as a call outcome whose result() raises.
    with pytest.raises(grpc.RpcError) as info:
        stub.ApiTest(Request(input="x"), metadata=[("x-version", "v2")], timeout=5)
    assert info.value.details() == NO_MATCH_DETAILS
    assert recorder.outcomes[-1].code() == grpc.StatusCode.UNAVAILABLE


def test_subscribe_follows_the_nodes(start_server: Start, channel: BalancedChannel) -> None:
    seen: list[grpc.ChannelConnectivity] = []
    changed = threading.Event()

    def record(state: grpc.ChannelConnectivity) -> None:
        seen.append(state)
        changed.set()

    channel.subscribe(record)
    wait_for(lambda: seen, 5, "the first connectivity")
    assert seen[0] == grpc.ChannelConnectivity.CONNECTING  # no snapshot yet
    channel.update(snapshot((start_server("a"), "v1")))
    wait_for(lambda: seen[-1] == grpc.ChannelConnectivity.READY, 10, "READY")
    channel.update(Snapshot(SERVICE, {}, 2))
    wait_for(lambda: seen[-1] == grpc.ChannelConnectivity.TRANSIENT_FAILURE, 5, "no nodes")
    channel.unsubscribe(record)


def test_options_and_tls_reach_every_subchannel(start_server: Start, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    server_credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    a = start_server("a", credentials=server_credentials)
    b = start_server("b", credentials=server_credentials)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with BalancedChannel(SERVICE, credentials=credentials, options=FAST_RECONNECT) as channel:
        channel.update(snapshot((a, "v1"), (b, "v1")))
        stub = ApiStub(channel)
        assert {who(stub.ApiTest(Request(input="x"), timeout=5)) for _ in range(40)} == {"a", "b"}
    # Without the certificate nothing connects.
    with BalancedChannel(SERVICE) as plain:
        plain.update(snapshot((a, "v1")))
        with pytest.raises(grpc.RpcError) as info:
            ApiStub(plain).ApiTest(Request(input="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------ done callbacks, closing


class _Timed:
    """The version policy, with a done callback on every pick (as latency-aware ones will)."""

    name = "timed"

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self._inner = VersionPolicy()

    def build(self, endpoints: Sequence[Endpoint[Any]]) -> Picker[Any]:
        inner = self._inner.build(endpoints)
        record = self.done

        class _Picker:
            def pick(self, call: Any) -> Pick[Any]:
                return Pick(
                    inner.pick(call).subchannel,
                    lambda info: record.append((info.code, info.latency)),
                )

        return _Picker()


def test_done_callbacks_see_every_calls_status(start_server: Start) -> None:
    a = start_server("a")
    policy = _Timed()
    with BalancedChannel(SERVICE, policy=policy) as channel:
        channel.update(snapshot((a, "v1")))
        stub = ApiStub(channel)
        stub.ApiTest(Request(input="x"), timeout=5)
        stub.ApiTest.with_call(Request(input="x"), timeout=5)
        stub.ApiTest.future(Request(input="x"), timeout=5).result()
        list(echo(channel, "unary_stream")(Request(input="s"), timeout=5))
        with pytest.raises(grpc.RpcError):
            stub.ApiTest(Request(input="fail"), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.ApiTest.future(Request(input="fail"), timeout=5).result()
        wait_for(lambda: len(policy.done) == 6, 5, "six done callbacks")
        assert sorted(code for code, _ in policy.done) == ["NOT_FOUND"] * 2 + ["OK"] * 4
        assert all(latency > 0 for _, latency in policy.done)
        assert all(not sub.inflight for sub in channel._subs.values())


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("grpc-etcd-channel")]


def test_close_stops_everything_promptly(start_server: Start) -> None:
    a = start_server("a")
    before = len(_monitor_threads())
    channel = BalancedChannel(SERVICE)
    closed: list[str] = []
    channel.add_close_callback(lambda: closed.append("stop the watcher"))
    many = {f"/k/{i}": Node(SERVICE, str(i), f"127.0.0.1:{1000 + i}", "v1") for i in range(200)}
    channel.update(Snapshot(SERVICE, {**many, **snapshot((a, "v1")).nodes}, 1))
    stub = ApiStub(channel)
    assert who(stub.ApiTest(Request(input="x"), timeout=5)) == "a"
    assert len(_monitor_threads()) == before + 1

    started = time.monotonic()
    channel.close()
    assert time.monotonic() - started < 1
    assert len(_monitor_threads()) == before
    assert closed == ["stop the watcher"]
    with pytest.raises(ValueError, match="closed channel"):
        stub.ApiTest(Request(input="x"), timeout=5)
    channel.close()  # twice is fine
    channel.update(snapshot((a, "v1")))  # and a late snapshot is ignored
    assert channel.subchannel_states() == {}
    channel.add_close_callback(lambda: closed.append("late"))
    assert closed == ["stop the watcher", "late"]


class _SpyEvent(threading.Event):
    """An Event that tells when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.set()
        return super().wait(timeout)


def test_close_wakes_waiting_calls(channel: BalancedChannel) -> None:
    spy = channel._changed = _SpyEvent()  # the event the picker's successor will set
    stub = ApiStub(channel)
    with futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stub.ApiTest, Request(input="x"), timeout=30)
        assert spy.waited.wait(5)
        channel.close()
        with pytest.raises(grpc.RpcError) as info:
            waiting.result(5)
    assert info.value.code() == grpc.StatusCode.CANCELLED
