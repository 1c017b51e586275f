"""The service config live from etcd (real etcd): first value, changes, bad documents, deletes,
an outage; and the pure tracker behind it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator

import pytest

from grpc_etcd.config import ServiceConfig, config_key, parse_config
from grpc_etcd.registry.config_watch import ConfigTracker, watch_config
from grpc_etcd.registry.etcd import AsyncEtcdClient
from grpc_etcd.testing import EtcdServer

SERVICE = "hwholiday.srv.app"
KEY = config_key(SERVICE)


def doc(weight_v2: int) -> bytes:
    routes = [
        {
            "to": [
                {"subset": {"version": "v1"}, "weight": 100 - weight_v2},
                {"subset": {"version": "v2"}, "weight": weight_v2},
            ]
        }
    ]
    return json.dumps({"routes": routes}).encode()


BAD = b'{"loadBalancingConfig": [{"no_such_policy": {}}]}'


async def _next(
    configs: AsyncGenerator[ServiceConfig | None, None], within: float = 5
) -> ServiceConfig | None:
    async with asyncio.timeout(within):
        return await anext(configs)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_tracker_first_value_changes_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    tracker = ConfigTracker(KEY)
    assert tracker.offer(None) and tracker.current is None  # the first value is always news
    assert tracker.offer(doc(10)) and tracker.current == parse_config(doc(10))
    assert not tracker.offer(doc(10))  # the same document again
    with caplog.at_level(logging.WARNING, "grpc_etcd.config"):
        assert not tracker.offer(BAD) and not tracker.offer(BAD)
    assert tracker.current == parse_config(doc(10))  # the last good one stays
    (warning,) = _warnings(caplog)
    assert KEY in warning and "no_such_policy" in warning
    assert tracker.offer(None) and tracker.current is None  # deleted: the code's config
    assert not tracker.offer(None)


def test_tracker_starting_on_a_bad_document_uses_the_codes_config() -> None:
    tracker = ConfigTracker(KEY)
    assert tracker.offer(b"{not json") and tracker.current is None


async def test_live_config(etcd: EtcdServer, caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as client:
        await client.put(KEY, doc(10))
        await client.put(KEY + "-other", BAD)  # a longer name is another service
        configs = watch_config(client, SERVICE)
        async with contextlib.aclosing(configs):
            assert await _next(configs) == parse_config(doc(10))
            await client.put(KEY, doc(50))
            assert await _next(configs) == parse_config(doc(50))
            with caplog.at_level(logging.WARNING, "grpc_etcd.config"):
                await client.put(KEY, BAD)
                await client.put(KEY, BAD)
                await client.put(KEY, doc(90))  # the next value seen is this one
                assert await _next(configs) == parse_config(doc(90))
            (warning,) = _warnings(caplog)
            assert KEY in warning and "no_such_policy" in warning
            await client.delete(KEY)
            assert await _next(configs) is None


async def test_absent_first_then_written(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as client:
        configs = watch_config(client, SERVICE, root="/prod")
        async with contextlib.aclosing(configs):
            assert await _next(configs) is None
            await client.put(config_key(SERVICE), doc(10))  # not under the root
            await client.put(config_key(SERVICE, "/prod"), doc(20))
            assert await _next(configs) == parse_config(doc(20))


async def test_an_outage_keeps_the_last_config(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint, timeout=1) as client:
        await client.put(KEY, doc(10))
        configs = watch_config(client, SERVICE)
        async with contextlib.aclosing(configs):
            assert await _next(configs) == parse_config(doc(10))
            nothing = asyncio.ensure_future(anext(configs))
            await asyncio.to_thread(etcd.stop)  # the watcher runs on through the outage
            await asyncio.to_thread(etcd.start)
            await client.put(KEY, doc(30), timeout=10)
            async with asyncio.timeout(10):
                assert await nothing == parse_config(doc(30))  # nothing else came meanwhile
