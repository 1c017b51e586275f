"""Client keys against a real etcd, in both twins: a channel whose config needs the fleet's
callers holds one leased key under /grpc-etcd/clients/<service>/ and follows the others."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.clients import ClientView, clients_prefix
from grpc_etcd.config import config_key
from grpc_etcd.demo import api_pb2_grpc
from grpc_etcd.policies import Endpoint, Picker, RandomPolicy
from grpc_etcd.testing import EtcdServer, TcpProxy

SERVICE = "t.srv.fleet"
PREFIX = clients_prefix(SERVICE)


class NeedsClients(RandomPolicy):
    """``random``, but asking for the view of the calling channels (as subsetting does)."""

    needs_clients = True

    def build(self, ready: Sequence[Endpoint[Any]]) -> Picker[Any]:
        return super().build(ready)


def _keys(etcd: EtcdServer) -> dict[str, dict[str, Any]]:
    """The client keys in etcd now: id -> decoded value."""
    out = etcd.etcdctl("get", PREFIX, "--prefix", "-w", "json")
    kvs = json.loads(out).get("kvs", [])
    return {
        base64.b64decode(kv["key"]).decode()[len(PREFIX) :]: json.loads(
            base64.b64decode(kv["value"])
        )
        for kv in kvs
    }


def _view(channel: Any) -> ClientView | None:
    view: ClientView | None = channel._balancer.clients
    return view


def _zones(channel: Any) -> Mapping[str, int] | None:
    view = _view(channel)
    return view.spread() if view is not None and view.known else None


def _zones_by(channel: Any, key: str) -> Mapping[str, int] | None:
    view = _view(channel)
    return view.spread(key) if view is not None and view.known else None


def test_sync_channels_hold_keys_see_each_other_and_let_go(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRPC_ETCD_ZONE", "b")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        plain = registry.channel(SERVICE)  # needs no clients: holds no key
        a = registry.channel(SERVICE, policy=NeedsClients(), source={"zone": "a", "app": "web"})
        b = registry.channel(SERVICE, policy=NeedsClients())
        for channel in (a, b):
            wait_for(lambda c=channel: _zones(c) == {"a": 1, "b": 1}, 5, "both clients seen")
        keys = _keys(etcd)
        assert sorted(v["labels"].get("zone") for v in keys.values()) == ["a", "b"]
        assert {"labels": {"app": "web", "zone": "a"}} in keys.values()
        view_a, view_b = _view(a), _view(b)
        assert view_a is not None and view_b is not None
        assert [c.id for c in view_a.clients] == [c.id for c in view_b.clients] == sorted(keys)
        assert {view_a.index, view_b.index} == {0, 1}
        assert _view(plain) is None

        a.close()
        assert list(_keys(etcd).values()) == [{"labels": {"zone": "b"}}], "gone on close()"
        wait_for(lambda: _zones(b) == {"b": 1}, 5, "the closed client to leave b's view")
        b.close()
        assert _keys(etcd) == {}
        plain.close()


async def test_aio_channels_hold_keys_see_each_other_and_let_go(etcd: EtcdServer) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        a = registry.channel(SERVICE, policy=NeedsClients(), source={"zone": "a"})
        b = registry.channel(SERVICE, policy=NeedsClients(), source={"zone": "b"})

        async def both() -> bool:
            return _zones(a) == _zones(b) == {"a": 1, "b": 1}

        await async_wait_for(both, 5, "both clients seen")
        assert len(_keys(etcd)) == 2
        await a.close()
        assert list(_keys(etcd).values()) == [{"labels": {"zone": "b"}}], "gone on close()"

        async def left() -> bool:
            return _zones(b) == {"b": 1}

        await async_wait_for(left, 5, "the closed client to leave b's view")
    assert _keys(etcd) == {}, "the registry's close deletes the keys of its channels"


REGION = {"locality": {"key": "region", "mode": "zone_aware", "minClusterSize": 1}}


def _labels(etcd: EtcdServer) -> list[dict[str, str]]:
    return sorted((v["labels"] for v in _keys(etcd).values()), key=lambda v: sorted(v.items()))


def test_sync_the_key_carries_the_locality_under_the_configs_key(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: with a locality key other than zone, $GRPC_ETCD_ZONE (or source=) goes under
    that key, where zone_aware and per-zone subsets look; a new key in etcd's config moves it."""
    monkeypatch.setenv("GRPC_ETCD_ZONE", "eu")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        env = registry.channel(SERVICE, config=REGION)
        named = registry.channel(SERVICE, config=REGION, source={"region": "us"})
        wait_for(lambda: _labels(etcd) == [{"region": "eu"}, {"region": "us"}], 5, "two keys")
        for channel in (env, named):
            wait_for(
                lambda c=channel: _zones_by(c, "region") == {"eu": 1, "us": 1}, 5, "the regions"
            )
        ids = set(_keys(etcd))
        registry.client.put(config_key(SERVICE), json.dumps({**REGION, "locality": {
            "key": "zone", "mode": "zone_aware"}}))  # fmt: skip
        wait_for(
            lambda: _labels(etcd) == [{"region": "us", "zone": "eu"}, {"zone": "eu"}],
            5,
            "zone from env",
        )
        assert set(_keys(etcd)) == ids, "each channel keeps its id"
        wait_for(lambda: _zones_by(named, "zone") == {"eu": 2}, 5, "the zones seen")
        env.close()
        named.close()


async def test_aio_the_key_carries_the_locality_under_the_configs_key(etcd: EtcdServer) -> None:
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        a = registry.channel(SERVICE, config=REGION, source={"region": "us", "zone": "a"})
        b = registry.channel(SERVICE, config=REGION, source={"region": "eu"})

        async def seen() -> bool:
            return _zones_by(a, "region") == _zones_by(b, "region") == {"eu": 1, "us": 1}

        await async_wait_for(seen, 5, "both regions seen")
        assert _labels(etcd) == [{"region": "eu"}, {"region": "us", "zone": "a"}]


def test_a_key_that_is_not_ours_is_one_warning_and_routing_goes_on(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture, start_server: Callable[..., EchoServer]
) -> None:
    caplog.set_level(logging.WARNING, logger="grpc_etcd.clients")
    etcd.etcdctl("put", PREFIX + "stranger", "not json")
    etcd.etcdctl("put", PREFIX + "nozone", '{"labels":{"zone":""}}')
    server = start_server("s1")
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address=server.address)
        channel = registry.channel(SERVICE, policy=NeedsClients(), source={"zone": "a"})
        wait_for(lambda: _zones(channel) == {"a": 1}, 5, "the view")
        view = _view(channel)
        assert view is not None and [c.id for c in view.clients if c.id != view.own.id] == [
            "nozone"
        ]
        etcd.etcdctl("put", PREFIX + "stranger", "still not json")  # the same fault: no news
        etcd.etcdctl("put", PREFIX + "later", '{"labels":{"zone":"c"}}')
        wait_for(lambda: _zones(channel) == {"a": 1, "c": 1}, 5, "the later client")
        warned = [r.getMessage() for r in caplog.records if r.name == "grpc_etcd.clients"]
        assert sorted(warned) == [
            f"client key {PREFIX}nozone: empty label 'zone' left out",
            f"ignoring client key {PREFIX}stranger: not valid JSON",
        ]
        api = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        assert who(api.ApiTest(Request(input="x"), timeout=5)) == "s1"
        channel.close()


def test_the_view_outlives_an_outage_and_catches_up_after_compaction(etcd: EtcdServer) -> None:
    """While etcd cannot be reached the last view stands; after it, a watch behind compaction
    reads the clients again (the nodes' gap-free loop)."""
    etcd.etcdctl("put", PREFIX + "gone", '{"labels":{"zone":"x"}}')
    with (
        TcpProxy(etcd.endpoint) as proxy,
        grpc_etcd.Registry(proxy.endpoint, timeout=2) as registry,
    ):
        channel = registry.channel(SERVICE, policy=NeedsClients(), source={"zone": "a"})
        wait_for(lambda: _zones(channel) == {"a": 1, "x": 1}, 5, "the first view")
        before = _view(channel)
        proxy.cut()
        etcd.etcdctl("del", PREFIX + "gone")
        etcd.etcdctl("put", PREFIX + "new", '{"labels":{"zone":"y"}}')
        for i in range(20):
            etcd.etcdctl("put", "/other/noise", str(i))
        revision = json.loads(etcd.etcdctl("get", "/other/noise", "-w", "json"))["header"]
        etcd.etcdctl("compact", str(revision["revision"]))
        assert _view(channel) is before, "an unreachable etcd empties no view"
        proxy.restore()
        wait_for(lambda: _zones(channel) == {"a": 1, "y": 1}, 10, "the view after compaction")
        channel.close()
