"""Shared test set-up: the etcd fixtures come from grpc_etcd's pytest plugin (entry point)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

# Test helpers (waiting) are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

# Property tests of what strangers can write (tests/fuzz, and the other hypothesis tests): a
# bounded run in `make test` (hypothesis' default, 100 examples a test), a long one with
# GRPC_ETCD_FUZZ=1 (or `pytest --hypothesis-profile fuzz`): see docs/security.md.
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("GRPC_ETCD_FUZZ"):
    settings.load_profile("fuzz")


@pytest.fixture
def metric_reader(monkeypatch: pytest.MonkeyPatch) -> InMemoryMetricReader:
    """An in-memory reader of what grpc_etcd records, as its default metrics for one test."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import grpc_etcd.metrics

    reader = InMemoryMetricReader()
    monkeypatch.setattr(
        grpc_etcd.metrics, "_default", grpc_etcd.metrics.Metrics(MeterProvider([reader]))
    )
    return reader
