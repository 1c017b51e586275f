"""Registration and watch metrics against a real etcd that is wiped under them."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from waiting import wait_for

import grpc_etcd
import grpc_etcd.metrics
from grpc_etcd.registry.etcd import EtcdClient
from grpc_etcd.testing import EtcdServer, TcpProxy

SERVICE = "test.srv.echo"


def totals(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    found[(metric.name, attributes)] = point.value  # type: ignore[union-attr]
    return found


def test_a_wiped_etcd_shows_as_a_recovery(
    etcd: EtcdServer, metric_reader: InMemoryMetricReader
) -> None:
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registration = registry.register(SERVICE, address="127.0.0.1:1", ttl=2)
        channel = registry.channel(SERVICE)
        wait_for(lambda: channel.snapshot is not None, 5, "the channel's first snapshot")
        key = (("grpc_etcd.key", registration.key), ("grpc_etcd.service", SERVICE))

        def state(name: str) -> float:
            return totals(metric_reader).get(
                ("grpc_etcd.registration.state", (*key, ("grpc_etcd.state", name))), -1
            )

        assert state("registered") == 1 and state("lost") == 0
        lease = registration.lease_id
        etcd.restart(wipe=True)
        wait_for(lambda: registration.lease_id != lease, 15, "the registration to recover")
        service = (("grpc_etcd.service", SERVICE),)
        assert totals(metric_reader)[("grpc_etcd.registration.recoveries", service)] == 1
        assert state("registered") == 1
    assert state("closed") == 1 and state("registered") == 0


def test_a_watch_behind_a_compaction_counts_a_resync(
    etcd: EtcdServer, metric_reader: InMemoryMetricReader
) -> None:
    service = (("grpc_etcd.service", SERVICE),)
    with (
        TcpProxy(etcd.endpoint) as proxy,
        grpc_etcd.Registry(proxy.endpoint) as watching,
        grpc_etcd.Registry(etcd.endpoint) as writing,
    ):
        channel = watching.channel(SERVICE)
        wait_for(lambda: channel.snapshot is not None, 5, "the channel's first snapshot")
        proxy.cut()
        writing.register(SERVICE, address="127.0.0.1:1")
        with EtcdClient(etcd.endpoint) as client:
            client.compact(client.put("/unrelated", "x"))
        assert totals(metric_reader).get(("grpc_etcd.watch.resyncs", service), 0) == 0
        proxy.restore()
        wait_for(
            lambda: totals(metric_reader).get(("grpc_etcd.watch.resyncs", service), 0) == 1,
            15,
            "the watch to read the prefix again",
        )
        wait_for(lambda: len(channel.snapshot or ()) == 1, 5, "the node registered meanwhile")
