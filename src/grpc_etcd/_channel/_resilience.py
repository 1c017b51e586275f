"""One channel's outlier ejection and retry state, shared by both twins.

The channel asks three things of it: which addresses are ejected (to fill
``Endpoint.ejected``), the picker to publish - the balancer's, wrapped (:meth:`wrap`) so that
every pick's done callback also feeds the outlier detector and the metrics, as grpc-go's outlier
detection wraps its child's picker - and the :class:`~grpc_etcd._channel._flow.CallPlan` of each
method (its retry or hedging policy, its timeout, the channel's retry throttle and replay
budget). ``on_change()`` is called (outside the lock) when the ejected set changes, so that
the channel publishes a new picker; the twins do that on their monitor (thread or loop), never
on the thread whose call ended. The detector's interval runs from :meth:`tick`, called from
that monitor too.

:func:`status_of` reads a finished grpc call (sync or grpc.aio) as the flow's ``Status``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import grpc

from ..config import ServiceConfig
from ..metrics import get_metrics
from ..outlier import OutlierDetector
from ..policies.base import DoneCallback, DoneInfo, NotReadyError, Pick, Picker
from ..retry import PUSHBACK_KEY, RetryThrottle
from ..routing import CallInfo
from ._call import THROWN_AWAY
from ._flow import OK, CallFlow, CallPlan, ReplayBudget, Status

__all__ = ["ChannelResilience", "status_name", "status_of"]

_tuple_new: Any = tuple.__new__

#: Plans kept per channel, one per method called; past it they are made per call (a channel
#: calls a handful of methods; a bound keeps a caller inventing names from growing it).
_MAX_PLANS = 1024


def status_name(call: Any) -> str:
    """The status code name of a finished call or its error ("UNKNOWN" when it has none)."""
    code = getattr(call, "code", None)
    if code is None:
        return "UNKNOWN"
    value = code()
    return value.name if isinstance(value, grpc.StatusCode) else "UNKNOWN"


def _ask(error: Any, name: str) -> Any:
    method = getattr(error, name, None)
    return method() if method is not None else None


def status_of(call: Any, *, got_response: bool | None = None) -> Status:
    """The :class:`Status` of a finished grpc call or its error, as the call's flow reads it:
    grpc's sync calls and errors and grpc.aio's ``AioRpcError`` answer ``code()``,
    ``details()``, ``initial_metadata()`` and ``trailing_metadata()`` at once. ``got_response``:
    what the twin saw itself (a message came), else whether headers came."""
    code = status_name(call)
    if code == "OK":
        return OK
    pushback = None
    for key, value in _ask(call, "trailing_metadata") or ():
        if key == PUSHBACK_KEY:
            pushback = value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
    if got_response is None:
        got_response = bool(_ask(call, "initial_metadata"))
    return Status(code, str(_ask(call, "details") or ""), pushback, got_response)


class ChannelResilience:
    """Outlier detection and retries of one channel, configured by its service config."""

    def __init__(
        self,
        target: str,
        on_change: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._config: ServiceConfig | None = None
        self._detector: OutlierDetector | None = None
        self._throttle: RetryThrottle | None = None
        self._addresses: frozenset[str] = frozenset()
        self._ejected: frozenset[str] = frozenset()
        self._versions: Mapping[str, str] = {}
        self._metrics = get_metrics()
        self._metrics.refresh()  # a provider set before this channel: seen from its first call
        self._rng = random.Random()
        # The bytes of request messages the channel's calls keep for replays (gRPC's 16 MiB).
        self._budget = ReplayBudget(lock=threading.Lock())
        #: Each method's CallPlan under the config in force (made again after a new config).
        self.plans: dict[str, CallPlan] = {}

    # ------------------------------------------------------------ configuration

    def configure(self, config: ServiceConfig | None) -> None:
        """Apply a (new) service config; a changed outlier config restarts its counters."""
        changed = False
        with self._lock:
            old = self._config
            self._config = config
            outlier = config.outlier_detection if config is not None else None
            if outlier is None:
                changed = bool(self._ejected)
                self._detector, self._ejected = None, frozenset()
            elif self._detector is None:
                self._detector = OutlierDetector(outlier, now=self._clock())
                self._detector.track(self._addresses)
            elif self._detector.config != outlier:
                self._detector.configure(outlier, now=self._clock())
            throttling = config.retry_throttling if config is not None else None
            old_throttling = old.retry_throttling if old is not None else None
            if throttling != old_throttling:
                self._throttle = (
                    RetryThrottle(throttling, lock=threading.Lock())
                    if throttling is not None
                    else None
                )
            self.plans = {}
        if changed:
            self._on_change()

    @property
    def health_service(self) -> str | None:
        """The ``healthCheckConfig.serviceName`` to watch, or None for no health checking."""
        config = self._config
        if config is None or config.health_check_config is None:
            return None
        return config.health_check_config.service_name

    @property
    def outlier_detection(self) -> bool:
        """Whether outlier detection is on (done callbacks feed it)."""
        return self._detector is not None

    # ------------------------------------------------------------ ejection

    def track(self, addresses: Iterable[str], versions: Mapping[str, str] | None = None) -> None:
        """The channel's addresses now (after a snapshot), with each one's version."""
        with self._lock:
            self._addresses = frozenset(addresses)
            self._versions = versions or {}
            if self._detector is not None:
                self._detector.track(self._addresses)
                self._ejected = self._detector.ejected

    def is_ejected(self, address: str) -> bool:
        """Whether outlier detection ejected ``address``."""
        return address in self._ejected

    def wrap(self, picker: Picker[Any]) -> Picker[Any]:
        """``picker`` as the channel publishes it: observed (outlier detection, metrics) when
        either is on, else as it is. While no MeterProvider is set, one may come later: the
        channel's monitor asks :meth:`metrics_came` now and then (and publishes again when it
        says yes)."""
        if self._detector is not None or self._metrics.enabled:
            return _ObservedPicker(picker, self)
        return picker

    def metrics_came(self) -> bool:
        """Whether a MeterProvider was set since the picker was published without one (the
        channel then publishes again, observed)."""
        metrics = self._metrics
        return metrics.pending and metrics.refresh()

    @property
    def metrics_pending(self) -> bool:
        """Whether a MeterProvider may still be set (then ask :meth:`metrics_came` now and
        then)."""
        return self._metrics.pending

    def observe(
        self, address: str, done: DoneCallback | None, method: str = ""
    ) -> DoneCallback | None:
        """``done`` wrapped to also count the attempt's outcome on ``address`` (outlier
        detection, metrics); ``done`` itself when neither wants it. The wrapper's ``started()``
        counts the attempt as started (else its end does); a pick given back before its attempt
        started (:data:`THROWN_AWAY`) counts as no attempt."""
        metrics = self._metrics
        if (
            self._detector is None
            and not metrics.enabled
            and not (metrics.pending and metrics.poll())
        ):
            return done
        metrics.picked(self._target, "ok")
        return _Observed(self, address, done, method)

    def refused(self, code: str) -> None:
        """A call failed at the pick (no node for it, or none in time): count it."""
        if code:  # "": a call on a closed channel, a usage error rather than a pick
            self._metrics.picked(self._target, code.lower())

    @property
    def counts_nodes(self) -> bool:
        """Whether :meth:`count_nodes` reports anywhere (else the counting can be skipped);
        looks again for a MeterProvider set since (a new picker is rare enough)."""
        metrics = self._metrics
        return metrics.enabled or (metrics.pending and metrics.refresh())

    def count_nodes(self, counts: Mapping[str, int]) -> None:
        """Report how many nodes are in each state (after a new picker)."""
        self._metrics.nodes(self._target, counts)

    def record(self, address: str, code: str) -> None:
        """Count one call's outcome on ``address`` (consecutive errors may eject it now)."""
        with self._lock:
            detector = self._detector
            if detector is None or not detector.record(address, code, self._clock()):
                return
            self._ejected = detector.ejected
        get_metrics().ejected(self._target, address, "consecutive_errors")
        self._on_change()

    def tick(self) -> float | None:
        """Run the detector's interval if it is due; seconds until the next one (None: off)."""
        with self._lock:
            detector = self._detector
            if detector is None:
                return None
            now = self._clock()
            if now < detector.next_sweep:
                return detector.next_sweep - now
            before = self._ejected
            changed = detector.sweep(now)
            self._ejected = detector.ejected
            wait = detector.next_sweep - now
        for address in changed - before:
            get_metrics().ejected(self._target, address, "interval")
        if changed:
            self._on_change()
        return wait

    # ------------------------------------------------------------ calls

    def plan(self, method: str) -> CallPlan:
        """The plan of ``method``'s calls under the config in force (cached: read
        :attr:`plans` first on a hot path)."""
        plan = self.plans.get(method)
        if plan is not None:
            return plan
        config = self._config
        entry = config.method_config_for(method) if config is not None else None
        metrics, target = self._metrics, self._target

        def ended(flow: CallFlow[Any]) -> None:
            metrics.call_ended(target, method, flow.retries, flow.transparent, flow.hedges)

        plan = CallPlan(
            retry=entry.retry_policy if entry is not None else None,
            hedging=entry.hedging_policy if entry is not None else None,
            timeout=entry.timeout if entry is not None else None,
            throttle=self._throttle,
            service=target,
            ended=ended,
            refused=self.refused,
            rng=self._rng,
            budget=self._budget,
        )
        plans = self.plans
        if len(plans) < _MAX_PLANS:
            plans[method] = plan
        return plan


class _Observed:
    """A pick's done callback that also feeds the outlier detector and the metrics."""

    __slots__ = ("_address", "_done", "_method", "_resilience", "_started")

    def __init__(
        self,
        resilience: ChannelResilience,
        address: str,
        done: DoneCallback | None,
        method: str,
    ) -> None:
        self._resilience = resilience
        self._address = address
        self._done = done
        self._method = method
        self._started = False

    def started(self) -> None:
        """The pick's attempt starts (gRFC A66's ``grpc.client.attempt.started``)."""
        self._started = True
        resilience = self._resilience
        resilience._metrics.attempt_started(resilience._target, self._method)

    def __call__(self, info: DoneInfo) -> None:
        done = self._done
        if done is not None:
            done(info)
        if info is THROWN_AWAY:
            return  # no attempt: nothing to measure, nothing said of the node
        resilience = self._resilience
        metrics, address = resilience._metrics, self._address
        if metrics.enabled:
            target = resilience._target
            if not self._started:
                metrics.attempt_started(target, self._method)
            version = resilience._versions.get(address, "")
            metrics.attempt_ended(target, self._method, info.code, info.latency, address, version)
        if resilience._detector is not None:
            resilience.record(address, info.code)


class _Recorder:
    """The done callback of every pick of one node while outlier detection alone observes
    them (no metrics recording, no done callback of the policy's): made once per node."""

    __slots__ = ("_address", "_resilience")

    def __init__(self, resilience: ChannelResilience, address: str) -> None:
        self._resilience = resilience
        self._address = address

    def __call__(self, info: DoneInfo) -> None:
        if info is not THROWN_AWAY:  # (no attempt: nothing said of the node)
            self._resilience.record(self._address, info.code)


class _ObservedPicker:
    """A picker whose picks' done callbacks also feed the channel's outlier detector and
    metrics (grpc-go's outlier detection wraps its child picker the same way)."""

    __slots__ = ("_inner", "_recorded", "_resilience")

    def __init__(self, inner: Picker[Any], resilience: ChannelResilience) -> None:
        self._inner = inner
        self._resilience = resilience
        #: Per sub-channel, the Pick that outlier detection alone hands out (see _Recorder).
        self._recorded: dict[Any, Pick[Any]] = {}

    def pick(self, call: CallInfo) -> Pick[Any]:
        picked = self._inner.pick(call)
        sub, done = picked
        address = sub.address
        resilience = self._resilience
        if address in resilience._ejected:
            # Ejected since this picker was built; the channel's monitor is publishing one
            # without it: give the pick back and have the call wait for that one.
            if done is not None:
                done(THROWN_AWAY)
            raise NotReadyError()
        metrics = resilience._metrics
        if done is None and resilience._detector is not None and not metrics.enabled:
            recorded = self._recorded.get(sub)
            if recorded is None:
                recorded = self._recorded[sub] = Pick(sub, _Recorder(resilience, address))
            return recorded
        # observe(), inlined (it runs on every pick).
        if (
            resilience._detector is None
            and not metrics.enabled
            and not (metrics.pending and metrics.poll())
        ):
            return picked  # nothing observes: the pick itself, no new Pick, no wrapped callback
        if metrics.enabled:
            metrics.picked(resilience._target, "ok")
        observed = _Observed(resilience, address, done, call.method)
        return cast("Pick[Any]", _tuple_new(Pick, (sub, observed)))
