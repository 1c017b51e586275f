"""A channel's ejection and retry state: config in, ejections and each method's plan out."""

from __future__ import annotations

import sys
import threading
from typing import Any

import grpc
import pytest

from grpc_etcd._channel._call import THROWN_AWAY
from grpc_etcd._channel._flow import Status
from grpc_etcd._channel._resilience import ChannelResilience, status_of
from grpc_etcd.config import parse_config
from grpc_etcd.policies.base import DoneInfo, NotReadyError, Pick
from grpc_etcd.routing import CallInfo

A, B, C = "127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"
CONFIG = {
    "healthCheckConfig": {"serviceName": "svc"},
    "outlierDetection": {
        "interval": "1s",
        "baseEjectionTime": "5s",
        "maxEjectionPercent": 34,
        "consecutiveErrors": 3,
    },
    "methodConfig": [
        {
            "name": [{"service": "proto.Api"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_errors_eject_and_the_interval_brings_back() -> None:
    clock, changes = Clock(), []
    state = ChannelResilience("t", lambda: changes.append(1), clock=clock)
    state.configure(parse_config(CONFIG))
    state.track([A, B, C])
    assert state.health_service == "svc" and state.outlier_detection
    seen: list[DoneInfo] = []
    done = state.observe(A, seen.append)
    assert done is not None
    for _ in range(3):
        done(DoneInfo("UNAVAILABLE", 0.01))
    assert len(seen) == 3 and state.is_ejected(A) and changes == [1]
    assert state.tick() == 1.0  # not due yet
    clock.now += 5.0
    state.tick()
    assert not state.is_ejected(A) and changes == [1, 1]


def test_no_config_no_ejection_no_health_and_no_retry_policy() -> None:
    state = ChannelResilience("t", lambda: None)
    assert state.health_service is None and not state.outlier_detection
    done = state.observe(A, None)
    if done is not None:  # the metrics' wrapper (opentelemetry-api is installed)
        done(DoneInfo("UNAVAILABLE", 0.01))
    assert state.tick() is None and not state.is_ejected(A)
    plan = state.plan("/proto.Api/Get")
    assert plan.retry is plan.hedging is plan.timeout is plan.throttle is None  # transparent only


def test_retry_policy_for_named_methods_and_dropping_outlier_config_returns_all() -> None:
    changes: list[int] = []
    state = ChannelResilience("t", lambda: changes.append(1), clock=Clock())
    state.configure(parse_config(CONFIG))
    state.track([A, B, C])
    assert state.plan("/proto.Api/Get").retry is not None
    assert state.plan("/other.Svc/Get").retry is None
    for _ in range(3):
        state.record(A, "UNAVAILABLE")
    assert state.is_ejected(A)
    state.configure(parse_config({}))
    assert not state.is_ejected(A) and changes == [1, 1]


def test_the_retry_throttle_loses_no_token_across_threads() -> None:
    # tokenRatio 1: each thread's failure then success nets zero and the count never reaches
    # the cap, so any lost update leaves it below maxTokens. A tiny switch interval makes the
    # threads interleave inside the updates (without the throttle's lock this loses tokens).
    config = {**CONFIG, "retryThrottling": {"maxTokens": 1000, "tokenRatio": 1}}
    state = ChannelResilience("t", lambda: None)
    state.configure(parse_config(config))
    start = threading.Barrier(8)

    plan = state.plan("/proto.Api/Get")
    throttle = plan.throttle
    assert throttle is not None

    def work() -> None:
        start.wait()
        for _ in range(2000):
            throttle.on_failure()  # a retryable failure takes a token
            plan.succeeded()  # a successful call gives it back

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert state._throttle is not None and state._throttle.tokens == 1000


def test_each_method_gets_the_plan_of_its_method_config() -> None:
    hedged = {
        "name": [{"service": "proto.Api", "method": "Fast"}],
        "timeout": "2s",
        "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s"},
    }
    state = ChannelResilience("t", lambda: None)
    state.configure(parse_config({**CONFIG, "methodConfig": [*CONFIG["methodConfig"], hedged]}))  # type: ignore[list-item]
    retried, fast, other = (
        state.plan(m) for m in ("/proto.Api/Get", "/proto.Api/Fast", "/other.Svc/Get")
    )
    assert retried.retry is not None and retried.hedging is None
    assert fast.hedging is not None and fast.timeout == 2.0 and fast.retry is None
    assert other.retry is other.hedging is other.timeout is None
    assert other.throttle is not None  # every call feeds the throttle
    assert state.plans["/proto.Api/Get"] is retried
    state.configure(parse_config({}))
    assert state.plans == {} and state.plan("/proto.Api/Get").retry is None
    assert state.plan("/proto.Api/Get").throttle is None


class _Ended:
    """What grpc's finished calls and errors answer (sync and grpc.aio's AioRpcError alike)."""

    def __init__(self, code: grpc.StatusCode, details: str = "", **metadata: object) -> None:
        self._code, self._details, self._metadata = code, details, metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> object:
        return self._metadata.get("headers", ())

    def trailing_metadata(self) -> object:
        return self._metadata.get("trailers", ())


def test_status_of_reads_code_details_pushback_and_whether_headers_came() -> None:
    assert status_of(_Ended(grpc.StatusCode.OK)) == Status("OK")
    pushed = _Ended(
        grpc.StatusCode.UNAVAILABLE, "busy", trailers=(("grpc-retry-pushback-ms", b"250"),)
    )
    assert status_of(pushed) == Status("UNAVAILABLE", "busy", "250", False)
    answered = _Ended(grpc.StatusCode.INTERNAL, "x", headers=(("k", "v"),))
    assert status_of(answered).got_response
    assert status_of(_Ended(grpc.StatusCode.INTERNAL), got_response=True).got_response
    assert status_of(ValueError("not a call")).code == "UNKNOWN"


def test_the_published_picker_observes_every_pick_and_refuses_a_node_ejected_since() -> None:
    state = ChannelResilience("t", lambda: None, clock=Clock())
    state.configure(parse_config(CONFIG))
    state.track([A, B, C])
    heard: list[DoneInfo] = []

    class Fixed:
        address = A

        def pick(self, call: CallInfo) -> Pick[Any]:
            return Pick(self, heard.append)

    fixed = Fixed()
    picker = state.wrap(fixed)
    picks = [picker.pick(CallInfo("/proto.Api/Get")) for _ in range(3)]
    assert all(sub is fixed and done is not heard.append for sub, done in picks)
    for _, done in picks:  # consecutiveErrors: 3, heard through the picks' done callbacks
        assert done is not None
        done(DoneInfo("UNAVAILABLE", 0.01))
    assert state.is_ejected(A) and len(heard) == 3
    with pytest.raises(NotReadyError):  # a picker built before the ejection: wait for the next
        picker.pick(CallInfo("/proto.Api/Get"))
    assert heard[-1] is THROWN_AWAY  # the inner pick, given back


def test_outlier_detection_alone_hands_out_one_pick_per_node_and_still_ejects() -> None:
    # No metrics recording and no done callback of the policy's: nothing is made per pick.
    state = ChannelResilience("t", lambda: None, clock=Clock())
    state.configure(parse_config(CONFIG))
    state.track([A, B, C])

    class Fixed:
        address = A

        def pick(self, call: CallInfo) -> Pick[Any]:
            return Pick(self)

    picker = state.wrap(Fixed())
    if state._metrics.enabled:
        pytest.skip("a MeterProvider is set in this process: every pick is observed")
    picks = [picker.pick(CallInfo("/proto.Api/Get")) for _ in range(3)]
    assert picks[0] is picks[1] is picks[2] and picks[0].done is not None
    picks[0].done(THROWN_AWAY)  # a pick given back says nothing of the node
    for _, done in picks:
        assert done is not None
        done(DoneInfo("UNAVAILABLE", 0.01))
    assert state.is_ejected(A)
    with pytest.raises(NotReadyError):
        picker.pick(CallInfo("/proto.Api/Get"))
