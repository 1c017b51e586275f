"""What an OpenTelemetry ``InMemoryMetricReader`` holds, in the shapes the tests assert on."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """metric name -> its data points, as recorded so far."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def attempts_and_hedges(reader: InMemoryMetricReader) -> tuple[int, list[str], Any]:
    """The attempts started, the status of each attempt measured (sorted), and the one
    ``grpc.client.call.hedges`` histogram point."""
    found = points(reader)
    started = sum(p.value for p in found["grpc.client.attempt.started"])
    statuses = sorted(
        p.attributes["grpc.status"]
        for p in found["grpc.client.attempt.duration"]
        for _ in range(p.count)
    )
    [hedges] = found["grpc.client.call.hedges"]
    return started, statuses, hedges
