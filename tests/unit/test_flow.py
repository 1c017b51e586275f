"""One call's flow (pure): events in, actions out, on a virtual clock; no server, no thread."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpc_etcd._channel._call import THROWN_AWAY, Refusal
from grpc_etcd._channel._flow import (
    Action,
    Attempt,
    CallFlow,
    CallPlan,
    Cancel,
    Commit,
    Finish,
    Start,
    Status,
    Wait,
)
from grpc_etcd.config import HedgingPolicy, RetryPolicy, RetryThrottling, parse_config
from grpc_etcd.node import Node
from grpc_etcd.policies import Balancer, ConnState, Endpoint
from grpc_etcd.policies.base import (
    DoneInfo,
    NoMatchError,
    NotReadyError,
    Pick,
    PickError,
    QueuePicker,
)
from grpc_etcd.retry import MAX_ATTEMPTS, RetryThrottle
from grpc_etcd.routing import CallInfo

CALL = CallInfo("/pkg.Api/Get", "v1")
REFUSED = "failed to connect to all addresses; Connection refused"


class Sub:
    """A sub-channel as the flow sees one."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.retired = False
        self.inflight: list[None] = []

    def __repr__(self) -> str:
        return self.address


class Picker:
    """Round robin over ``subs`` (a fresh done recorder per pick), or a refusal."""

    def __init__(self, subs: Sequence[Sub] = (), refuse: PickError | None = None) -> None:
        self.subs = list(subs)
        self.refuse = refuse
        self.picks = 0
        self.done: list[list[DoneInfo]] = []  # per pick, what its done callback heard

    def pick(self, call: CallInfo) -> Pick[Sub]:
        if self.refuse is not None:
            raise self.refuse
        sub = self.subs[self.picks % len(self.subs)]
        self.picks += 1
        heard: list[DoneInfo] = []
        self.done.append(heard)
        return Pick(sub, heard.append)


def retry_policy(attempts: int = 3, codes: Sequence[str] = ("UNAVAILABLE",)) -> RetryPolicy:
    return RetryPolicy.model_validate(
        {
            "maxAttempts": attempts,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": list(codes),
        }
    )


def hedging_policy(
    attempts: int = 3, delay: str = "0.1s", codes: Sequence[str] = ("UNAVAILABLE",)
) -> HedgingPolicy:
    return HedgingPolicy.model_validate(
        {"maxAttempts": attempts, "hedgingDelay": delay, "nonFatalStatusCodes": list(codes)}
    )


def throttle(max_tokens: int = 10, ratio: float = 0.5) -> RetryThrottle:
    return RetryThrottle(
        RetryThrottling.model_validate({"maxTokens": max_tokens, "tokenRatio": ratio})
    )


def flow(
    picker: Picker | Callable[[], Any],
    *,
    timeout: float | None = 10.0,
    info: CallInfo = CALL,
    **plan: Any,
) -> CallFlow[Any]:
    pickers = picker if callable(picker) else (lambda: picker)
    plan.setdefault("rng", random.Random(7))
    return CallFlow(pickers, info, CallPlan(service="s", **plan), now=0.0, timeout=timeout)


def started(actions: list[Action]) -> list[Attempt[Sub]]:
    return [action.attempt for action in actions if isinstance(action, Start)]


def only(actions: list[Action], kind: type) -> Any:
    [action] = [a for a in actions if isinstance(a, kind)]
    return action


# ------------------------------------------------------------------ waiting or failing


def test_the_first_refused_pick_decides_without_a_second_draw() -> None:
    picker = Picker(refuse=NoMatchError())
    refused: list[str] = []
    call = flow(picker, refused=refused.append)
    assert call.start(0.0) == [Finish(None, Refusal("UNAVAILABLE", "no match found conn"))]
    assert call.finished and refused == ["UNAVAILABLE"]
    # The refusal a twin met on its own first pick decides just the same: no pick here.
    other = Picker([Sub("a")])
    assert flow(other).start(0.0, NoMatchError()) == [
        Finish(None, Refusal("UNAVAILABLE", "no match found conn"))
    ]
    assert other.picks == 0


def test_a_call_waits_for_a_node_until_its_deadline_and_says_why() -> None:
    picker = Picker(refuse=NotReadyError())
    call = flow(picker, timeout=2.0, info=CALL._replace(wait_for_ready=True))
    assert call.start(0.0) == [Wait(2.0, True)]
    assert call.on_time(1.0) == []  # nothing due yet, the Wait stands
    assert call.on_picker(1.5) == []  # still no node: the same Wait
    picker.refuse = NotReadyError("cannot resolve s: etcd at 127.0.0.1:2379 is not answering")
    call.on_picker(1.6)
    assert call.on_time(2.0) == [
        Wait(None, False),
        Finish(
            None,
            Refusal(
                "DEADLINE_EXCEEDED",
                "Deadline Exceeded: no ready node of s (version 'v1') in time: "
                "cannot resolve s: etcd at 127.0.0.1:2379 is not answering",
            ),
        ),
    ]


def test_what_the_channel_waits_for_is_named_when_the_deadline_passes() -> None:
    with pytest.raises(NotReadyError) as refused:
        QueuePicker("etcd at 127.0.0.1:1 has not answered yet").pick(CALL)
    call = flow(Picker(refuse=refused.value), timeout=0.5)
    assert call.start(0.0) == [Wait(0.5, True)]  # a reason is no failure: the call waits
    [_, finish] = call.on_time(0.5)
    assert finish == Finish(
        None,
        Refusal(
            "DEADLINE_EXCEEDED",
            "Deadline Exceeded: no ready node of s (version 'v1') in time: "
            "etcd at 127.0.0.1:1 has not answered yet",
        ),
    )


def test_a_node_that_comes_starts_the_attempt_with_what_is_left_of_the_deadline() -> None:
    picker = Picker(refuse=NotReadyError())
    call = flow(picker, timeout=2.0)
    call.start(0.0)
    picker.refuse = None
    picker.subs = [Sub("a")]
    actions = call.on_picker(0.5)
    [attempt] = started(actions)
    assert attempt.timeout == 1.5 and actions[-1] == Wait(None, False)


def test_without_wait_for_ready_a_failing_channel_fails_at_once() -> None:
    picker = Picker(refuse=NotReadyError("all failing"))
    assert flow(picker).start(0.0) == [Finish(None, Refusal("UNAVAILABLE", "all failing"))]
    waiting = flow(picker, info=CALL._replace(wait_for_ready=True))
    assert waiting.start(0.0) == [Wait(10.0, True)]


def test_a_retired_pick_is_given_back_and_made_again_on_the_new_picker() -> None:
    old, new = Picker([Sub("gone")]), Picker([Sub("b")])
    old.subs[0].retired = True
    current = [old]

    def pickers() -> Picker:
        picker = current[0]
        current[0] = new  # the channel published the picker without it already
        return picker

    [attempt] = started(flow(pickers).start(0.0))
    assert attempt.subchannel.address == "b"
    assert old.done == [[THROWN_AWAY]]


@pytest.mark.parametrize(
    ("method_timeout", "timeout", "deadline"),
    [(1.0, 3.0, 6.0), (9.0, 3.0, 8.0), (1.0, None, 6.0), (None, None, None), (None, 2.0, 7.0)],
)
def test_the_deadline_runs_from_the_start_and_the_methods_timeout_bounds_the_callers(
    method_timeout: float | None, timeout: float | None, deadline: float | None
) -> None:
    plan = CallPlan(timeout=method_timeout)
    call = CallFlow(lambda: Picker([Sub("a")]), CALL, plan, now=5.0, timeout=timeout)
    assert call.deadline == deadline
    [attempt] = started(call.start(5.5))
    assert attempt.timeout == (None if deadline is None else deadline - 5.5)


# ------------------------------------------------------------------ retries


def test_a_retry_waits_its_backoff_and_goes_to_an_untried_node() -> None:
    picker = Picker([Sub("a"), Sub("b"), Sub("c")])
    call = flow(picker, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    [wait] = call.on_status(first, Status("UNAVAILABLE", "down"), 0.01)
    assert isinstance(wait, Wait) and not wait.picker and 0.01 <= (wait.until or 0) <= 0.11
    assert call.on_time(0.005) == []  # too early
    [second] = started(call.on_time(wait.until or 0))
    assert second.subchannel.address != first.subchannel.address
    assert second.timeout == pytest.approx(10.0 - (wait.until or 0))
    [third] = started(call.on_status(second, Status("UNAVAILABLE"), 0.2) and call.on_time(2.0))
    actions = call.on_status(third, Status("UNAVAILABLE", "still down"), 2.1)
    assert actions[-1] == Finish(third)  # maxAttempts 3
    assert {a.subchannel.address for a in call.attempts} == {"a", "b", "c"}
    assert call.retries == 2 and call.transparent == 0
    assert [len(heard) for heard in picker.done] == [1, 1, 1]
    assert all(not sub.inflight for sub in picker.subs)


def test_only_retryable_codes_are_retried_and_a_response_commits() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("NOT_FOUND"), 0.1)[-1] == Finish(first)
    call = flow(picker, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    # Headers came before the failure: gRFC A6 commits the call, no retry.
    got = Status("UNAVAILABLE", "Socket closed", got_response=True)
    assert call.on_status(first, got, 0.1)[-1] == Finish(first)


def test_transparent_retry_once_at_once_whatever_the_policy() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker)
    [first] = started(call.start(0.0))
    [second] = started(call.on_status(first, Status("UNAVAILABLE", REFUSED), 0.01))
    assert second.subchannel.address == "b" and call.transparent == 1
    assert call.on_status(second, Status("UNAVAILABLE", REFUSED), 0.02)[-1] == Finish(second)
    # A server that answered UNAVAILABLE itself was reached: no transparent retry.
    call = flow(picker)
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", "overloaded"), 0.1)[-1] == Finish(first)


def test_pushback_sets_the_retry_delay_or_forbids_it() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", pushback="250"), 1.0) == [Wait(1.25, False)]
    call = flow(picker, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", pushback="-1"), 1.0)[-1] == Finish(first)


def test_a_retry_that_cannot_start_before_the_deadline_is_not_made() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, retry=retry_policy(3), timeout=1.0)
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", pushback="500"), 0.6)[-1] == Finish(first)


def test_every_successful_call_credits_the_throttle_and_retryable_failures_take_tokens() -> None:
    bucket = throttle(10, 0.5)
    picker = Picker([Sub("a"), Sub("b")])
    for _ in range(4):  # no retry policy at all: A6 still counts the successes
        call = flow(picker, throttle=bucket)
        [attempt] = started(call.start(0.0))
        bucket.on_failure()
        call.on_status(attempt, Status("OK"), 0.1)
    assert bucket.tokens == 8.0  # 10 - 4 + 4 x 0.5
    call = flow(picker, throttle=bucket, retry=retry_policy(5))
    [attempt] = started(call.start(0.0))
    call.on_status(attempt, Status("UNAVAILABLE"), 0.1)
    assert bucket.tokens == 7.0
    # The hot path's success takes the same decision through the plan.
    CallPlan(throttle=bucket).succeeded()
    assert bucket.tokens == 7.5


def test_a_drained_throttle_stops_retries() -> None:
    bucket = throttle(10, 0.1)
    for _ in range(5):
        bucket.on_failure()
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, throttle=bucket, retry=retry_policy(5))
    [attempt] = started(call.start(0.0))
    assert call.on_status(attempt, Status("UNAVAILABLE"), 0.1)[-1] == Finish(attempt)


def test_after_a_failed_connection_a_retry_waits_for_a_picker_offering_another_node() -> None:
    # prefer_local with one node in the caller's zone: its picker offers that node only. It
    # died: the transparent retry waits for the picker that knows it (the channel sees its
    # connection fail), instead of failing on it again.
    local, remote = Picker([Sub("a")]), Picker([Sub("b")])
    current = [local]
    call = flow(lambda: current[0], timeout=5.0)
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", REFUSED), 0.01) == [Wait(0.26, True)]
    assert local.done[1] == [THROWN_AWAY]  # the pick of the tried node, given back
    current[0] = remote
    [second] = started(call.on_picker(0.02))
    assert second.subchannel.address == "b" and call.transparent == 1
    assert call.on_status(second, Status("OK"), 0.03)[-1] == Finish(second)


def test_with_no_new_picker_the_retry_goes_to_the_tried_node_after_a_while() -> None:
    picker = Picker([Sub("a")])
    call = flow(picker, retry=retry_policy(3), timeout=5.0)
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", REFUSED), 0.01) == [Wait(0.26, True)]
    assert call.on_time(0.1) == []  # (too early)
    [second] = started(call.on_time(0.26))
    assert second.subchannel.address == "a"
    # A node that answered UNAVAILABLE itself was reached: its retry does not wait a picker.
    wait = only(call.on_status(second, Status("UNAVAILABLE", "busy"), 0.3), Wait)
    assert not wait.picker
    [third] = started(call.on_time(wait.until or 0))
    assert third.subchannel.address == "a"


def test_the_wait_for_another_node_ends_at_the_deadline_with_the_attempts_outcome() -> None:
    picker = Picker([Sub("a")])
    call = flow(picker, timeout=0.1)
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", REFUSED), 0.01) == [Wait(0.1, True)]
    assert call.on_time(0.1)[-1] == Finish(first)
    assert all(len(heard) == 1 for heard in picker.done)  # the attempt's, and picks given back


def test_an_adopted_hot_path_attempt_is_retried_like_any() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    sub = picker.subs[0]
    heard: list[DoneInfo] = []
    sub.inflight.append(None)  # the twin counted it, as its hot path does
    call = flow(picker)
    first = call.adopt(Pick(sub, heard.append), 0.0)
    [second] = started(call.on_status(first, Status("UNAVAILABLE", REFUSED), 0.25))
    assert heard == [DoneInfo("UNAVAILABLE", 0.25)] and not sub.inflight
    assert second.subchannel.address == "b" and len(second.subchannel.inflight) == 1


def test_an_adopted_attempt_of_a_hedged_call_has_its_hedge_due_after_the_delay() -> None:
    plan = CallPlan(hedging=hedging_policy(2, "0.1s"))
    assert plan.inline and plan.hedge_delay == pytest.approx(0.1)
    assert not CallPlan(hedging=hedging_policy(2, "0s")).inline  # all at once: the flow's
    assert not CallPlan(timeout=1.0).inline and CallPlan(retry=retry_policy()).inline
    picker = Picker([Sub("a"), Sub("b")])
    sub = picker.subs[0]
    sub.inflight.append(None)
    call = flow(picker, hedging=hedging_policy(2, "0.1s"))
    first = call.adopt(Pick(sub, None), 0.0)
    actions = call.on_time(0.1)  # the twin's timer, hedgingDelay after the attempt started
    [second] = started(actions)
    assert second.subchannel.address == "b" and call.hedges == 1
    assert call.on_status(second, Status("OK"), 0.2) == [Cancel(first), Finish(second)]


def test_the_application_cancels() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, hedging=hedging_policy(2, "0s"))
    first, second = started(call.start(0.0))
    actions = call.cancel(0.1)
    assert actions[:2] == [Cancel(first), Cancel(second)]
    assert actions[-1] == Finish(None, Refusal("CANCELLED", "Locally cancelled by application!"))
    assert call.on_status(first, Status("CANCELLED"), 0.2) == []
    assert picker.done[0] == [DoneInfo("CANCELLED", 0.2)]


def test_a_failure_after_the_commit_still_takes_a_throttle_token() -> None:
    bucket = throttle(10, 0.1)
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, throttle=bucket, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    headers = Status("UNAVAILABLE", got_response=True)  # headers came, then the failure
    assert call.on_status(first, headers, 0.1)[-1] == Finish(first)
    assert bucket.tokens == 9  # as grpc core: counted before the commit is looked at
    call = flow(picker, throttle=bucket, retry=retry_policy(3))
    [first] = started(call.start(0.0))
    call.on_response(first, 0.1)
    assert call.on_status(first, Status("INTERNAL"), 0.2)[-1] == Finish(first)
    assert bucket.tokens == 9  # not a retryable code: no token


# ------------------------------------------------------------------ hedging


def test_hedges_go_out_every_delay_to_untried_nodes_and_the_first_response_wins() -> None:
    picker = Picker([Sub("a"), Sub("b"), Sub("c")])
    call = flow(picker, hedging=hedging_policy(3, "0.1s"))
    actions = call.start(0.0)
    [first] = started(actions)
    assert actions[-1] == Wait(0.1, False)
    actions = call.on_time(0.1)
    [second] = started(actions)
    assert actions[-1] == Wait(pytest.approx(0.2), False)
    assert second.subchannel.address != first.subchannel.address
    assert call.on_response(second, 0.15) == [Commit(second), Cancel(first), Wait(None, False)]
    assert call.on_status(first, Status("CANCELLED"), 0.16) == []
    assert call.on_status(second, Status("OK"), 0.17) == [Finish(second)]
    assert call.hedges == 1 and call.retries == 0


def test_a_non_fatal_status_sends_the_next_hedge_at_once_and_a_fatal_one_ends_all() -> None:
    picker = Picker([Sub("a"), Sub("b"), Sub("c")])
    call = flow(picker, hedging=hedging_policy(3, "1s"))
    [first] = started(call.start(0.0))
    [second] = started(call.on_status(first, Status("UNAVAILABLE"), 0.1))
    assert call.on_time(1.1) and len(call.attempts) == 3
    third = call.attempts[2]
    actions = call.on_status(second, Status("INVALID_ARGUMENT"), 1.2)
    assert actions == [Cancel(third), Finish(second)]


def test_hedging_delay_zero_sends_every_attempt_at_once_on_distinct_nodes() -> None:
    picker = Picker([Sub("a"), Sub("b"), Sub("c"), Sub("d")])
    call = flow(picker, hedging=hedging_policy(9, "0s"))
    attempts = started(call.start(0.0))
    assert len(attempts) == 4  # one per node: hedges never go to a tried node
    picker.subs.append(Sub("e"))
    more = flow(picker, hedging=hedging_policy(9, "0s"))
    assert len(started(more.start(0.0))) == MAX_ATTEMPTS


def test_the_last_failed_hedge_is_the_calls_outcome() -> None:
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, hedging=hedging_policy(2, "0s"))
    first, second = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE"), 0.1) == []
    assert call.on_status(second, Status("UNAVAILABLE"), 0.2)[-1] == Finish(second)


def test_hedges_that_reach_the_calls_deadline_each_end_by_it() -> None:
    picker = Picker([Sub("a"), Sub("b"), Sub("c")])
    call = flow(picker, timeout=0.5, hedging=hedging_policy(3, "0.1s"))
    [first] = started(call.start(0.0))
    [second] = started(call.on_time(0.1))
    deadline = Status("DEADLINE_EXCEEDED", "Deadline Exceeded")
    assert call.on_status(first, deadline, 0.5) == [Wait(None, False)]  # no cancel of b
    assert call.on_status(second, deadline, 0.501) == [Finish(second)]
    # A DEADLINE_EXCEEDED long before the call's deadline (a server's own) is fatal.
    call = flow(picker, timeout=5.0, hedging=hedging_policy(3, "0.1s"))
    [first] = started(call.start(0.0))
    [second] = started(call.on_time(0.1))
    assert call.on_status(first, deadline, 0.2) == [
        Cancel(second),
        Wait(None, False),
        Finish(first),
    ]


def test_hedges_obey_the_throttle_and_pushback() -> None:
    bucket = throttle(10, 0.1)
    for _ in range(5):
        bucket.on_failure()  # 5 tokens: not more than half
    picker = Picker([Sub("a"), Sub("b")])
    call = flow(picker, throttle=bucket, hedging=hedging_policy(2, "0.1s"))
    [first] = started(call.start(0.0))
    assert started(call.on_time(0.1)) == []  # the throttle holds the hedge back
    picker = Picker([Sub("a"), Sub("b"), Sub("c")])
    call = flow(picker, hedging=hedging_policy(3, "1s"))
    [first] = started(call.start(0.0))
    assert call.on_status(first, Status("UNAVAILABLE", pushback="300"), 0.1) == [Wait(0.4, False)]
    [second] = started(call.on_time(0.4))
    assert call.on_status(second, Status("UNAVAILABLE", pushback="-1"), 0.5)[-1] == Finish(second)


def test_a_hedged_call_whose_hedge_finds_no_node_waits_for_its_first_attempt() -> None:
    picker = Picker([Sub("a")])
    call = flow(picker, hedging=hedging_policy(3, "0.1s"))
    [first] = started(call.start(0.0))
    assert started(call.on_time(0.1)) == []
    assert call.on_status(first, Status("OK"), 0.3)[-1] == Finish(first)
    assert picker.done[1] == [THROWN_AWAY]  # the hedge's pick of a, given back


# ------------------------------------------------------------------ a split's share


def test_a_split_to_a_version_without_nodes_fails_for_exactly_its_share() -> None:
    """Issue 13: ``v1=50,v9=50`` with no v9 node failed ~25% of calls (a refused pick was
    drawn again). Seeded, 4,000 calls through a real Balancer: the share that fails is
    50% +- 3% (the binomial's sigma is 0.8%, so the bound is ~4 sigma wide)."""
    config = parse_config(
        {
            "routes": [
                {
                    "to": [
                        {"subset": {"version": "v1"}, "weight": 50},
                        {"subset": {"version": "v9"}, "weight": 50},
                    ]
                }
            ]
        }
    )
    subs = [Sub(f"127.0.0.1:{port}") for port in (1, 2)]
    endpoints = [
        Endpoint(Node("s", f"n{i}", sub.address, "v1"), sub, ConnState.READY)
        for i, sub in enumerate(subs)
    ]
    picker = Balancer[Sub](config).build(endpoints)
    random.seed(13)
    outcomes: Counter[str] = Counter()
    for _ in range(4000):
        call = CallFlow(lambda: picker, CallInfo("/pkg.Api/Get"), CallPlan(), now=0.0, timeout=5)
        action = call.start(0.0)[-1]
        outcomes["failed" if isinstance(action, Finish) else "started"] += 1
        if isinstance(action, Start):
            call.on_status(action.attempt, Status("OK"), 0.1)
    assert abs(outcomes["failed"] / 4000 - 0.5) < 0.03, outcomes


# ------------------------------------------------------------------ properties


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    attempt: Attempt[Sub] | None = field(compare=False, default=None)
    status: Status | None = field(compare=False, default=None)


@dataclass
class _Outcome:
    """What a scripted attempt does: after ``after`` seconds it responds (then ends OK) or
    ends with ``status``."""

    after: float
    status: Status


class _Run:
    """A driver on a virtual clock: does every action, delivers every event in time order."""

    def __init__(
        self, call: CallFlow[Sub], script: Iterator[_Outcome], picker: Picker, flip: float | None
    ) -> None:
        self.call = call
        self.script = script
        self.picker = picker
        self.flip = flip  # when the picker, refusing at first, gets its nodes back
        self.events: list[_Event] = []
        self.seq = 0
        self.wait = Wait(None, False)
        self.timer: _Event | None = None
        self.finishes: list[Finish] = []
        self.finished_at = -1.0
        self.starts: list[tuple[float, Attempt[Sub], set[str]]] = []
        self.now = 0.0

    def push(self, at: float, kind: str, attempt: Attempt[Sub] | None = None, **kw: Any) -> _Event:
        self.seq += 1
        event = _Event(at, self.seq, kind, attempt, kw.get("status"))
        heapq.heappush(self.events, event)
        return event

    def do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Start):
                attempt = action.attempt
                tried = {a.subchannel.address for a in self.call.attempts[: attempt.number]}
                self.starts.append((self.now, attempt, tried))
                outcome = next(self.script)
                if outcome.status.code == "OK":
                    self.push(self.now + outcome.after, "response", attempt)
                self.push(self.now + outcome.after, "status", attempt, status=outcome.status)
            elif isinstance(action, Cancel):
                self.push(self.now, "status", action.attempt, status=Status("CANCELLED"))
            elif isinstance(action, Wait):
                self.wait = action
                if self.timer is not None:
                    self.timer.kind = "stale"
                    self.timer = None
                if action.until is not None:
                    self.timer = self.push(max(action.until, self.now), "time")
            elif isinstance(action, Finish):
                self.finishes.append(action)
                self.finished_at = self.now

    def run(self) -> None:
        if self.flip is not None:
            self.push(self.flip, "picker")
        self.do(self.call.start(0.0))
        while self.events:
            event = heapq.heappop(self.events)
            self.now = event.at
            call = self.call
            if event.kind == "response":
                assert event.attempt is not None
                self.do(call.on_response(event.attempt, self.now))
            elif event.kind == "status":
                assert event.attempt is not None and event.status is not None
                if not event.attempt.ended:  # a cancelled attempt that had ended already
                    self.do(call.on_status(event.attempt, event.status, self.now))
            elif event.kind == "time":
                self.timer = None
                self.do(call.on_time(self.now))
            elif event.kind == "picker":
                self.picker.refuse = None
                if self.wait.picker:
                    self.do(call.on_picker(self.now))


_CODES = ["OK", "UNAVAILABLE", "INTERNAL", "NOT_FOUND", "DEADLINE_EXCEEDED"]
_outcomes = st.builds(
    _Outcome,
    after=st.sampled_from([0.0, 0.05, 0.1, 0.3, 2.0]),
    status=st.builds(
        Status,
        code=st.sampled_from(_CODES),
        details=st.sampled_from(["", REFUSED, "Socket closed"]),
        pushback=st.sampled_from([None, None, None, "0", "50", "-1"]),
        got_response=st.booleans(),
    ),
)
_plans = st.one_of(
    st.just({}),
    st.builds(lambda n, codes: {"retry": retry_policy(n, codes)}, st.integers(2, 7),
              st.sampled_from([("UNAVAILABLE",), ("UNAVAILABLE", "INTERNAL")])),
    st.builds(lambda n, d, codes: {"hedging": hedging_policy(n, d, codes)}, st.integers(2, 7),
              st.sampled_from(["0s", "0.05s", "0.2s"]),
              st.sampled_from([(), ("UNAVAILABLE",), ("UNAVAILABLE", "INTERNAL")])),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    plan=_plans,
    nodes=st.integers(1, 4),
    outcomes=st.lists(_outcomes, min_size=12, max_size=12),
    timeout=st.sampled_from([None, 0.25, 1.0, 5.0]),
    refuse_first=st.sampled_from([None, 0.1, 0.5]),
    throttled=st.booleans(),
)
def test_properties_of_any_run(
    plan: dict[str, Any],
    nodes: int,
    outcomes: list[_Outcome],
    timeout: float | None,
    refuse_first: float | None,
    throttled: bool,
) -> None:
    subs = [Sub(f"n{i}") for i in range(nodes)]
    picker = Picker(subs, NotReadyError() if refuse_first is not None else None)
    bucket = throttle(10, 0.1) if throttled else None
    call = flow(picker, timeout=timeout, throttle=bucket, **plan)
    run = _Run(call, iter(outcomes), picker, refuse_first)
    run.run()
    # It ends, once.
    assert call.finished and len(run.finishes) == 1
    # Never more attempts than maxAttempts (capped at 5), plus one transparent retry.
    policy = plan.get("retry") or plan.get("hedging")
    counted = policy.attempts if policy is not None else 1
    assert len(call.attempts) <= counted + call.transparent
    assert call.transparent <= 1
    # Every pick's done callback heard exactly once; nothing is left counted in flight.
    assert [len(heard) for heard in picker.done] == [1] * picker.picks
    assert all(not sub.inflight for sub in subs) and all(a.ended for a in call.attempts)
    for at, attempt, tried in run.starts:
        # Never past the deadline: an attempt starts before it, with what is left of it.
        if call.deadline is not None:
            assert at <= call.deadline and attempt.timeout == pytest.approx(call.deadline - at)
        # Never a tried node while an untried one was there to pick.
        if attempt.subchannel.address in tried:
            assert tried >= {sub.address for sub in subs}
            assert "hedging" not in plan or (attempt.number and call.transparent)
    (finish,) = run.finishes
    if finish.attempt is None:
        assert finish.refusal is not None and finish.refusal.code in ("DEADLINE_EXCEEDED",)
        assert call.deadline is not None and run.finished_at == pytest.approx(call.deadline)
    else:
        assert finish.attempt.ended
    if bucket is not None:
        assert 0 <= bucket.tokens <= 10
