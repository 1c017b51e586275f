"""The asyncio twin's drive of the call flow, where the table of outcomes does not reach: request
streams written by hand (``write()`` / ``done_writing()``) and their replay buffer's limits,
the hot path of a hedged call, the application's cancel of a hedged call, interceptors on a
retried call, and an ejection's new picker published on the loop's next turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from recorded import attempts_and_hedges
from scripted import RETRY, SERVICE, Lab, Ordered, Request, method

import grpc_etcd.aio
from grpc_etcd.aio import BalancedChannel


def hedging(delay: str) -> dict[str, Any]:
    policy = {"maxAttempts": 3, "hedgingDelay": delay, "nonFatalStatusCodes": ["UNAVAILABLE"]}
    return {"methodConfig": [{"name": [{}], "hedgingPolicy": policy}]}


async def _channel(
    lab: Lab, policy: Ordered, config: dict[str, Any] | None, **kw: Any
) -> BalancedChannel:
    channel = grpc_etcd.aio.BalancedChannel(SERVICE, policy=policy, config=config, **kw)
    channel.update(lab.snapshot())
    assert await asyncio.to_thread(policy.built.wait, 10), "not connected to all three"
    policy.reset()
    return channel


async def test_a_request_stream_written_by_hand_is_replayed_on_the_next_attempt(lab: Lab) -> None:
    for kind in ("stream_unary", "stream_stream"):
        lab.reset({"a": ("unavailable",)})
        policy = Ordered()
        async with await _channel(lab, policy, RETRY) as channel:
            call = method(channel, kind)(timeout=5)
            for text in "xyz":
                await call.write(Request(input=text))
            await call.done_writing()
            if kind == "stream_unary":
                outputs = [(await call).output]
            else:
                outputs = [reply.output async for reply in call]
            assert await call.code() == grpc.StatusCode.OK
            done = await asyncio.to_thread(policy.wait_done)
        assert policy.picks == ["a", "b"] and done == ["UNAVAILABLE", "OK"], kind
        expected = ["b|ok|xyz"] if kind == "stream_unary" else ["b|ok|x", "b|ok|y", "b|ok|z"]
        assert outputs == expected, kind


async def _big(count: int) -> AsyncIterator[Request]:
    for _ in range(count):
        yield Request(input="m" * 64 * 1024)


@pytest.mark.parametrize(("messages", "picks"), [(3, ["a", "b"]), (5, ["a"])])
async def test_past_256_kib_of_requests_the_call_commits_and_is_not_retried(
    lab: Lab, messages: int, picks: list[str]
) -> None:
    # 3 x 64 KiB are kept and sent again to b; 5 x 64 KiB pass gRPC's 256 KiB per call, so
    # the call commits to a, whose failure is then the call's.
    lab.reset({"a": ("unavailable",)})
    policy = Ordered()
    async with await _channel(lab, policy, RETRY) as channel:
        call = method(channel, "stream_unary")(_big(messages), timeout=5)
        code = (await call.code()).name
        await asyncio.to_thread(policy.wait_done)
        assert channel._resilience._budget.used == 0  # nothing kept once the call ended
    assert policy.picks == picks
    assert code == ("OK" if len(picks) == 2 else "UNAVAILABLE")


async def test_a_hedged_call_answered_before_the_delay_makes_no_hedge_and_no_flow(
    lab: Lab,
) -> None:
    lab.reset()
    policy = Ordered()
    async with await _channel(lab, policy, hedging("5s")) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=10)
        assert (await call).output == "a|ok|x"
        assert call._flow is None  # decided on the hot path
        alarm = channel._alarms[5.0]
        assert not alarm._calls  # the hedge that was to follow is off
        stream = method(channel, "unary_stream")(Request(input="s"), timeout=10)
        assert [reply.output async for reply in stream] == ["b|ok|s"] * 2
        assert stream._flow is None and not alarm._calls
        assert await asyncio.to_thread(policy.wait_done) == ["OK", "OK"]


async def test_the_application_cancels_a_hedged_call_and_every_server_sees_it(lab: Lab) -> None:
    lab.reset({"a": ("hang",), "b": ("hang",)})
    policy = Ordered()
    async with await _channel(lab, policy, hedging("0.05s")) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=10)
        ended: list[Any] = []
        call.add_done_callback(ended.append)
        await asyncio.to_thread(
            lab.journal.wait, lambda seen: len(seen) == 2, 10, "two hedges on their servers"
        )
        assert call.cancel() and not call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled() and ended == [call]
        assert await call.code() == grpc.StatusCode.CANCELLED
        assert await asyncio.to_thread(policy.wait_done) == ["CANCELLED", "CANCELLED"]
    await asyncio.to_thread(
        lab.journal.wait,
        lambda seen: all(attempt.cancelled for attempt in seen),
        10,
        "both servers to see the cancel",
    )


async def test_a_task_awaiting_a_call_is_cancelled_and_so_is_the_call(lab: Lab) -> None:
    lab.reset({"a": ("hang",)})
    policy = Ordered()
    async with await _channel(lab, policy, RETRY) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=10)
        waiting = asyncio.ensure_future(call)
        await asyncio.to_thread(lab.journal.wait, lambda seen: seen, 10, "the attempt on a")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await call.code() == grpc.StatusCode.CANCELLED
        # The application's cancel, not a CANCELLED attempt for the retry policy to judge.
        assert policy.picks == ["a"]
        assert await asyncio.to_thread(policy.wait_done) == ["CANCELLED"]


class _Counting(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls += 1
        return await continuation(details, request)


async def test_a_retried_call_runs_the_interceptors_once_per_attempt(lab: Lab) -> None:
    lab.reset({"a": ("unavailable",)})
    policy, counting = Ordered(), _Counting()
    async with await _channel(lab, policy, RETRY, interceptors=[counting]) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert (await call).output == "b|ok|x"
        assert (await call.code(), counting.calls) == (grpc.StatusCode.OK, 2)
        assert await asyncio.to_thread(policy.wait_done) == ["UNAVAILABLE", "OK"]


async def test_an_ejection_publishes_its_picker_on_the_loops_next_turn(lab: Lab) -> None:
    lab.reset({"a": ("unavailable",)})
    config = {"outlierDetection": {"maxEjectionPercent": 50, "consecutiveErrors": 1}}
    policy = Ordered()
    async with await _channel(lab, policy, config) as channel:
        recording = False
        published: list[bool] = []
        publish, record = channel._publish, channel._resilience.record

        def publishing() -> None:
            published.append(recording)
            publish()

        def recorded(address: str, code: str) -> None:
            nonlocal recording
            recording = True
            try:
                record(address, code)
            finally:
                recording = False

        channel._publish = publishing  # type: ignore[method-assign]
        channel._resilience.record = recorded  # type: ignore[method-assign]
        with pytest.raises(grpc.aio.AioRpcError):
            await method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert channel._resilience.is_ejected(lab.servers["a"].address)
        await asyncio.sleep(0)  # the loop's next turn
        assert published == [False]  # published, and not inside the call's done callback


async def test_a_call_that_stopped_waiting_for_a_node_is_not_kept_by_the_channel() -> None:
    async with grpc_etcd.aio.BalancedChannel(SERVICE) as channel:  # no node yet: calls wait
        calls = [method(channel, "unary_unary")(Request(input="x"), timeout=0.05) for _ in range(3)]
        assert len(channel._waiting) == 3
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not channel._waiting  # none is held until a picker comes, maybe never


async def test_a_bidi_call_waits_for_its_connection_before_it_writes(lab: Lab) -> None:
    # The server answers once the client is done writing, so no response (which would commit
    # the call) comes before the writes: wait_for_connection() must not wait for one.
    lab.reset({"a": ("unavailable",)})
    policy = Ordered()
    async with await _channel(lab, policy, RETRY) as channel:
        call = method(channel, "stream_stream")(timeout=5)
        await call.wait_for_connection()
        await call.write(Request(input="x"))
        await call.done_writing()
        assert (await call.read()).output == "b|ok|x"  # a failed it: replayed to b
        assert await call.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert await call.code() == grpc.StatusCode.OK
        assert policy.picks == ["a", "b"]


async def test_the_headers_of_a_retried_call_are_its_attempts_and_commit_it(lab: Lab) -> None:
    lab.reset({"a": ("unavailable",), "b": ("after_headers",)})
    policy = Ordered()
    async with await _channel(lab, policy, RETRY) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert ("scripted", "headers") in list(await call.initial_metadata())  # b's
        assert await call.code() == grpc.StatusCode.UNAVAILABLE  # after them: not retried
        assert policy.picks == ["a", "b"]


async def test_hedges_are_measured_per_attempt_and_counted(
    lab: Lab, metric_reader: InMemoryMetricReader
) -> None:
    lab.reset({"a": ("hang",)})
    policy = Ordered()
    async with await _channel(lab, policy, hedging("0.05s")) as channel:
        call = method(channel, "unary_unary")(Request(input="x"), timeout=5)
        assert (await call).output == "b|ok|x"
        assert await asyncio.to_thread(policy.wait_done) == ["CANCELLED", "OK"]
    started, statuses, hedges = attempts_and_hedges(metric_reader)
    assert started == 2 and statuses == ["CANCELLED", "OK"]
    assert (hedges.count, hedges.sum) == (1, 1)  # type: ignore[attr-defined]
