"""Metrics through the OpenTelemetry metrics API (``pip install 'grpc-etcd[metrics]'``).

Without ``opentelemetry-api`` installed every method here is a no-op, so the library never
needs it. With it, instruments come from the global meter provider (or the one you pass), and
any OpenTelemetry exporter - Prometheus, OTLP - sees them; docs/metrics.md shows how.

gRPC's own names are used where gRPC defines the metric (gRFC A66 per-attempt metrics, A96
retry metrics, with A66's attribute names ``grpc.method``, ``grpc.target``, ``grpc.status``);
the rest are ours, under ``grpc_etcd.*``:

==========================================  =========  ==========================================
``grpc.client.attempt.started``             counter    attempts started (method, target)
``grpc.client.attempt.duration``            histogram  seconds per attempt (+ status, node, version)
``grpc.client.call.retries``                histogram  retries per call that retried
``grpc.client.call.transparent_retries``    histogram  transparent retries per call
``grpc.client.call.hedges``                 histogram  hedged attempts per call that hedged (A96)
``grpc_etcd.lb.picks``                      counter    picks: ok, or the refusal's status code
``grpc_etcd.lb.ejections``                  counter    outlier ejections (node, reason)
``grpc_etcd.lb.nodes``                      gauge      nodes per state (ready, connecting, ...)
``grpc_etcd.registration.state``            gauge      1 for a registration's current state
``grpc_etcd.registration.recoveries``       counter    registrations written again after a loss
``grpc_etcd.watch.resyncs``                 counter    watches that had to read the whole prefix
==========================================  =========  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Metrics", "get_metrics"]

METER_NAME = "grpc_etcd"
#: gRFC A66's histogram buckets for latencies (seconds), so dashboards line up with gRPC's.
LATENCY_BUCKETS = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13,
    0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100,
)  # fmt: skip
REGISTRATION_STATES = ("registered", "lost", "closed")


#: While no MeterProvider is set, the channels look again for one every this many calls
#: (and on each new picker): recording into OpenTelemetry's no-op proxy costs ~2 us a call.
CHECK_EVERY = 1024


def _live(otel: Any, provider: Any) -> bool:
    """Whether ``provider`` records anywhere: not the no-op one, nor the global proxy before
    ``set_meter_provider`` (which forwards to nothing until then)."""
    if isinstance(provider, otel.NoOpMeterProvider):
        return False
    try:  # the proxy is private API: if it moved, assume a real provider (record, as before)
        from opentelemetry.metrics import _internal
    except ImportError:  # pragma: no cover
        return True
    return provider is not getattr(_internal, "_PROXY_METER_PROVIDER", None)


class Metrics:
    """The instruments grpc-etcd records into; every method is cheap and never raises."""

    def __init__(self, meter_provider: Any = None) -> None:
        """``meter_provider``: an OpenTelemetry MeterProvider (the global one when None)."""
        self.enabled = False
        """False when nothing would be recorded: opentelemetry-api is not installed, or no
        MeterProvider is set yet (see :meth:`refresh`)."""
        #: True while the global provider is unset: :meth:`poll` looks for it now and then.
        self.pending = False
        self._countdown = CHECK_EVERY
        try:
            from opentelemetry import metrics as otel
        except ImportError:
            return
        self._otel = otel
        self._global = meter_provider is None
        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        # Instruments of the global proxy start recording once a provider is set.
        meter = provider.get_meter(METER_NAME)
        self.enabled = _live(otel, provider)
        self.pending = not self.enabled and self._global
        self._attempt_started = meter.create_counter(
            "grpc.client.attempt.started", unit="{attempt}", description="Attempts started."
        )
        self._attempt_duration = meter.create_histogram(
            "grpc.client.attempt.duration",
            unit="s",
            description="Time from an attempt's start to its end.",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
        )
        self._retries = meter.create_histogram(
            "grpc.client.call.retries", unit="{retry}", description="Retries per call."
        )
        self._transparent = meter.create_histogram(
            "grpc.client.call.transparent_retries",
            unit="{transparent_retry}",
            description="Transparent retries per call.",
        )
        self._hedges = meter.create_histogram(
            "grpc.client.call.hedges", unit="{hedge}", description="Hedges per call."
        )
        self._picks = meter.create_counter(
            "grpc_etcd.lb.picks", unit="{pick}", description="Picks by result."
        )
        self._ejections = meter.create_counter(
            "grpc_etcd.lb.ejections", unit="{ejection}", description="Outlier ejections."
        )
        self._nodes = meter.create_gauge(
            "grpc_etcd.lb.nodes", unit="{node}", description="A channel's nodes per state."
        )
        self._registration = meter.create_gauge(
            "grpc_etcd.registration.state",
            unit="1",
            description="1 for the state a registration is in, 0 for the others.",
        )
        self._recoveries = meter.create_counter(
            "grpc_etcd.registration.recoveries",
            unit="{recovery}",
            description="Registrations written again after losing their lease or key.",
        )
        self._resyncs = meter.create_counter(
            "grpc_etcd.watch.resyncs",
            unit="{resync}",
            description="Watches that read the whole prefix again (compaction, lost etcd).",
        )

    def refresh(self) -> bool:
        """Look again whether a global MeterProvider has been set; returns :attr:`enabled`."""
        if self.pending and _live(self._otel, self._otel.get_meter_provider()):
            self.enabled, self.pending = True, False
        return self.enabled

    def poll(self) -> bool:
        """Called per call while disabled: every :data:`CHECK_EVERY` th call refreshes."""
        self._countdown -= 1
        if self._countdown > 0:
            return False
        self._countdown = CHECK_EVERY
        return self.refresh()

    def attempt_started(self, target: str, method: str) -> None:
        """An attempt of ``method`` is about to be sent on the channel of ``target``."""
        if self.enabled:
            self._attempt_started.add(1, {"grpc.method": method, "grpc.target": target})

    def attempt_ended(
        self, target: str, method: str, status: str, seconds: float, node: str, version: str
    ) -> None:
        """An attempt ended with ``status`` after ``seconds`` on ``node`` (its address)."""
        if self.enabled:
            self._attempt_duration.record(
                seconds,
                {
                    "grpc.method": method,
                    "grpc.target": target,
                    "grpc.status": status,
                    "grpc_etcd.node": node,
                    "grpc_etcd.version": version,
                },
            )

    def call_ended(
        self, target: str, method: str, retries: int, transparent: int, hedges: int = 0
    ) -> None:
        """A call that retried or hedged ended (A96 records only the counts that are not 0)."""
        if not self.enabled:
            return
        attributes = {"grpc.method": method, "grpc.target": target}
        if retries:
            self._retries.record(retries, attributes)
        if transparent:
            self._transparent.record(transparent, attributes)
        if hedges:
            self._hedges.record(hedges, attributes)

    def picked(self, target: str, result: str) -> None:
        """One pick: ``ok``, or how a refused call failed (``unavailable``,
        ``deadline_exceeded``)."""
        if self.enabled:
            self._picks.add(1, {"grpc.target": target, "grpc_etcd.result": result})

    def ejected(self, target: str, node: str, reason: str) -> None:
        """``node`` was ejected by outlier detection for ``reason``."""
        if self.enabled or (self.pending and self.refresh()):
            attributes = {"grpc.target": target, "grpc_etcd.node": node, "grpc_etcd.reason": reason}
            self._ejections.add(1, attributes)

    def nodes(self, target: str, counts: Mapping[str, int]) -> None:
        """How many of the channel's nodes are in each state now."""
        if self.enabled:
            for state, count in counts.items():
                self._nodes.set(count, {"grpc.target": target, "grpc_etcd.state": state})

    def registration_state(self, service: str, key: str, state: str) -> None:
        """A registration is now in ``state`` (one of :data:`REGISTRATION_STATES`)."""
        if self.enabled or (self.pending and self.refresh()):
            for each in REGISTRATION_STATES:
                attributes = {
                    "grpc_etcd.service": service,
                    "grpc_etcd.key": key,
                    "grpc_etcd.state": each,
                }
                self._registration.set(1 if each == state else 0, attributes)

    def recovered(self, service: str) -> None:
        """A lost registration was written again."""
        if self.enabled or (self.pending and self.refresh()):
            self._recoveries.add(1, {"grpc_etcd.service": service})

    def resynced(self, service: str) -> None:
        """A watch had to read the whole prefix again."""
        if self.enabled or (self.pending and self.refresh()):
            self._resyncs.add(1, {"grpc_etcd.service": service})


_default: Metrics | None = None


def get_metrics() -> Metrics:
    """The process-wide :class:`Metrics` on the global meter provider (made on first use).

    OpenTelemetry's global provider is a proxy, so a provider set after this call still
    receives everything.
    """
    global _default
    if _default is None:
        _default = Metrics()
    return _default
