"""A Registry against an etcd with user/password auth, and one with mutual TLS."""

from __future__ import annotations

from collections.abc import Callable

from waiting import wait_for

import grpc_etcd
from grpc_etcd.registry.etcd import TLSConfig
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"


def test_auth_registry_survives_an_etcd_restart(etcd_factory: Callable[..., EtcdServer]) -> None:
    etcd = etcd_factory(auth=("root", "s3cret"))
    with grpc_etcd.Registry(etcd.endpoint, username="root", password="s3cret") as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5001", version="v1", ttl=3)
        snapshots = registry.watch(SERVICE)
        assert [n.key for n in next(snapshots)] == [reg.key]
        etcd.restart()  # the old token is stale after a restart: re-authenticate transparently
        etcd.etcdctl("put", "/hwholiday/srv/app/after", '{"node":{"address":"127.0.0.1:9"}}')
        assert [n.id for n in next(snapshots).added] == ["after"]
        assert len(registry.nodes(SERVICE)) == 2
        reg.update(version="v2")
        wait_for(lambda: any(n.version == "v2" for n in registry.nodes(SERVICE)), 3, "update")
        snapshots.close()  # type: ignore[attr-defined]


def test_mutual_tls_registry(etcd_factory: Callable[..., EtcdServer]) -> None:
    etcd = etcd_factory(tls="mutual")
    tls = TLSConfig(
        ca_file=str(etcd.ca_file),
        cert_file=str(etcd.client_cert_file),
        key_file=str(etcd.client_key_file),
    )
    with grpc_etcd.Registry(etcd.endpoint, tls=tls) as registry:
        reg = registry.register(SERVICE, address="127.0.0.1:5001", version="v1")
        assert [n.key for n in registry.nodes(SERVICE)] == [reg.key]
