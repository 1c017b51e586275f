"""Metrics land in OpenTelemetry under gRPC's names; without opentelemetry they are no-ops."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from grpc_etcd.metrics import Metrics

TARGET = "etcd:///test.srv.echo"


def collect(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """metric name -> [(attributes, value or histogram (count, sum))]."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # type: ignore[attr-defined]
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def test_every_instrument_records_with_its_attributes() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    assert metrics.enabled
    metrics.attempt_started(TARGET, "/proto.Api/ApiTest")
    metrics.attempt_ended(TARGET, "/proto.Api/ApiTest", "OK", 0.004, "127.0.0.1:5001", "v1")
    metrics.attempt_ended(TARGET, "/proto.Api/ApiTest", "OK", 0.006, "127.0.0.1:5001", "v1")
    metrics.call_ended(TARGET, "/proto.Api/ApiTest", retries=2, transparent=0)
    metrics.call_ended(TARGET, "/proto.Api/ApiTest", retries=0, transparent=0)  # not recorded
    metrics.picked(TARGET, "ok")
    metrics.ejected(TARGET, "127.0.0.1:5002", "consecutive_errors")
    metrics.nodes(TARGET, {"ready": 2, "ejected": 1})
    metrics.registration_state("test.srv.echo", "/test/srv/echo/a", "lost")
    metrics.recovered("test.srv.echo")
    metrics.resynced("test.srv.echo")
    seen = collect(reader)
    method = {"grpc.method": "/proto.Api/ApiTest", "grpc.target": TARGET}
    assert seen["grpc.client.attempt.started"] == [(method, 1)]
    [(attributes, (count, total))] = seen["grpc.client.attempt.duration"]
    assert attributes == {
        **method,
        "grpc.status": "OK",
        "grpc_etcd.node": "127.0.0.1:5001",
        "grpc_etcd.version": "v1",
    }
    assert count == 2 and abs(total - 0.01) < 1e-9
    assert seen["grpc.client.call.retries"] == [(method, (1, 2))]
    assert "grpc.client.call.transparent_retries" not in seen
    assert seen["grpc_etcd.lb.picks"] == [({"grpc.target": TARGET, "grpc_etcd.result": "ok"}, 1)]
    [(ejection, ejections)] = seen["grpc_etcd.lb.ejections"]
    assert ejection["grpc_etcd.reason"] == "consecutive_errors" and ejections == 1
    nodes = {a["grpc_etcd.state"]: v for a, v in seen["grpc_etcd.lb.nodes"]}
    assert nodes == {"ready": 2, "ejected": 1}
    states = {a["grpc_etcd.state"]: v for a, v in seen["grpc_etcd.registration.state"]}
    assert states == {"registered": 0, "lost": 1, "closed": 0}
    assert seen["grpc_etcd.registration.recoveries"][0][1] == 1
    assert seen["grpc_etcd.watch.resyncs"][0][1] == 1


def test_without_opentelemetry_everything_is_a_no_op() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # makes the import fail
        "from grpc_etcd.metrics import Metrics\n"
        "m = Metrics()\n"
        "assert not m.enabled\n"
        "m.attempt_started('t', 'm'); m.attempt_ended('t', 'm', 'OK', 0.1, 'n', 'v')\n"
        "m.call_ended('t', 'm', 1, 1); m.picked('t', 'ok'); m.ejected('t', 'n', 'r')\n"
        "m.nodes('t', {'ready': 1}); m.registration_state('s', 'k', 'lost')\n"
        "m.recovered('s'); m.resynced('s'); print('ok')\n"
    )
    _prints_ok(code)


def test_no_provider_set_costs_nothing_until_one_is_set_later() -> None:
    # The global provider is set once per process: run in a fresh one. Until the user sets a
    # provider, observe() hands the done callback back unwrapped (the ~2 us saved per call);
    # within CHECK_EVERY calls of set_meter_provider, calls are measured again.
    code = (
        "from opentelemetry import metrics as otel\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from grpc_etcd.metrics import CHECK_EVERY\n"
        "from grpc_etcd._channel._resilience import ChannelResilience\n"
        "r = ChannelResilience('t', lambda: None)\n"
        "done = lambda info: None\n"
        "assert not r._metrics.enabled and r._metrics.pending\n"
        "assert all(r.observe('a:1', done) is done for _ in range(3 * CHECK_EVERY))\n"
        "reader = InMemoryMetricReader()\n"
        "otel.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "wrapped = [r.observe('a:1', done) is not done for _ in range(CHECK_EVERY)]\n"
        "assert any(wrapped) and wrapped[-1], wrapped.count(True)\n"
        "names = {m.name for rm in reader.get_metrics_data().resource_metrics\n"
        "         for sm in rm.scope_metrics for m in sm.metrics}\n"
        "assert 'grpc_etcd.lb.picks' in names, names\n"
        "print('ok')\n"
    )
    _prints_ok(code)


def _prints_ok(code: str) -> None:
    """Run ``code`` in a fresh interpreter (its own global provider) and expect it to print ok."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_sync_channel_measures_once_a_provider_is_set_and_costs_nothing_before() -> None:
    # Fresh interpreter (its own global provider). No provider: the published picker is the
    # balancer's own, no observation per pick; the monitor thread looks for a provider and,
    # once one is set, publishes an observed picker: calls are measured.
    code = (
        "import time\n"
        "from concurrent import futures\n"
        "import grpc\n"
        "from opentelemetry import metrics as otel\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "import grpc_etcd\n"
        "from grpc_etcd import Node, Snapshot\n"
        "from grpc_etcd.demo import api_pb2, api_pb2_grpc\n"
        "class Api(api_pb2_grpc.ApiServicer):\n"
        "    def ApiTest(self, request, context):\n"
        "        return api_pb2.Response(output='a')\n"
        "server = grpc.server(futures.ThreadPoolExecutor(2))\n"
        "api_pb2_grpc.add_ApiServicer_to_server(Api(), server)\n"
        "address = f\"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}\"\n"
        "server.start()\n"
        "node = Node('s.v', 'a', address, 'v1', key='/s/v/a')\n"
        "channel = grpc_etcd.BalancedChannel('s.v')\n"
        "channel.update(Snapshot('s.v', {'/s/v/a': node}, 1))\n"
        "stub = api_pb2_grpc.ApiStub(channel)\n"
        "stub.ApiTest(api_pb2.Request(input='x'), timeout=5, wait_for_ready=True)\n"
        "assert type(channel._picker).__name__ != '_ObservedPicker'\n"
        "reader = InMemoryMetricReader()\n"
        "otel.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "deadline = time.monotonic() + 10\n"
        "while type(channel._picker).__name__ != '_ObservedPicker':\n"
        "    assert time.monotonic() < deadline, 'never observed'\n"
        "    time.sleep(0.01)\n"
        "stub.ApiTest(api_pb2.Request(input='x'), timeout=5)\n"
        "names = {m.name for rm in reader.get_metrics_data().resource_metrics\n"
        "         for sm in rm.scope_metrics for m in sm.metrics}\n"
        "assert 'grpc.client.attempt.duration' in names, names\n"
        "channel.close(); server.stop(None)\n"
        "print('ok')\n"
    )
    _prints_ok(code)


def test_an_aio_channel_measures_once_a_provider_is_set_and_costs_nothing_before() -> None:
    # The asyncio twin of the test above: its loop looks for a provider now and then.
    code = (
        "import asyncio, time\n"
        "import grpc.aio\n"
        "from opentelemetry import metrics as otel\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from grpc_etcd import Node, Snapshot, aio\n"
        "from grpc_etcd.demo import api_pb2, api_pb2_grpc\n"
        "class Api(api_pb2_grpc.ApiServicer):\n"
        "    async def ApiTest(self, request, context):\n"
        "        return api_pb2.Response(output='a')\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    api_pb2_grpc.add_ApiServicer_to_server(Api(), server)\n"
        "    address = f\"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}\"\n"
        "    await server.start()\n"
        "    node = Node('s.v', 'a', address, 'v1', key='/s/v/a')\n"
        "    channel = aio.BalancedChannel('s.v')\n"
        "    channel.update(Snapshot('s.v', {'/s/v/a': node}, 1))\n"
        "    stub = api_pb2_grpc.ApiStub(channel)\n"
        "    await stub.ApiTest(api_pb2.Request(input='x'), timeout=5, wait_for_ready=True)\n"
        "    assert type(channel._picker).__name__ != '_ObservedPicker'\n"
        "    reader = InMemoryMetricReader()\n"
        "    otel.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "    deadline = time.monotonic() + 10\n"
        "    while type(channel._picker).__name__ != '_ObservedPicker':\n"
        "        assert time.monotonic() < deadline, 'never observed'\n"
        "        await asyncio.sleep(0.01)\n"
        "    await stub.ApiTest(api_pb2.Request(input='x'), timeout=5)\n"
        "    names = {m.name for rm in reader.get_metrics_data().resource_metrics\n"
        "             for sm in rm.scope_metrics for m in sm.metrics}\n"
        "    assert 'grpc.client.attempt.duration' in names, names\n"
        "    await channel.close(); await server.stop(None)\n"
        "    print('ok')\n"
        "asyncio.run(main())\n"
    )
    _prints_ok(code)
