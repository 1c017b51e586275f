"""The service config in etcd reaches running channels (sync and aio), over the code's config."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable

import pytest
from echo_servers import EchoServer, Request, who
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.config import config_key
from grpc_etcd.demo.api_pb2_grpc import ApiStub
from grpc_etcd.testing import EtcdServer

SERVICE = "test.srv.live"
KEY = config_key(SERVICE)
# Every call to v2; v3 (no such node) falls back to the code's fallback: any node.
TO_V2 = json.dumps({"routes": [{"to": [{"subset": {"version": "v2"}}]}]})
TO_V3 = json.dumps({"routes": [{"to": [{"subset": {"version": "v3"}}]}]})
INVALID = json.dumps({"routes": [{"to": "v2"}]})
CODE_CONFIG = {"fallback": [{}]}
WITHIN = 2.0  # seconds from the write in etcd to the running channel


def _servers(start_server: Callable[..., EchoServer]) -> tuple[EchoServer, EchoServer]:
    return start_server("one"), start_server("two")


def _invalid_was_seen(caplog: pytest.LogCaptureFixture) -> bool:
    return any(KEY in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_sync_channel_follows_the_config_in_etcd(
    etcd: EtcdServer, start_server: Callable[..., EchoServer], caplog: pytest.LogCaptureFixture
) -> None:
    one, two = _servers(start_server)
    with grpc_etcd.Registry(etcd.endpoint) as registry:
        registry.register(SERVICE, address=one.address, version="v1")
        registry.register(SERVICE, address=two.address, version="v2")
        channel = registry.channel(SERVICE, config=CODE_CONFIG)
        api = ApiStub(channel)

        def spread(calls: int = 40) -> Counter[str]:
            return Counter(who(api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls))

        wait_for(lambda: set(spread()) == {"one", "two"}, 10, "calls to both nodes")

        registry.client.put(KEY, TO_V2)
        wait_for(lambda: channel.config.routes, WITHIN, "the config from etcd")
        assert spread() == {"two": 40}

        caplog.set_level(logging.WARNING, logger="grpc_etcd.config")
        registry.client.put(KEY, INVALID)
        wait_for(lambda: _invalid_was_seen(caplog), WITHIN, "the warning for the bad config")
        assert spread() == {"two": 40}  # the last good config stays

        # Merged key by key: etcd's routes, the code's fallback.
        registry.client.put(KEY, TO_V3)
        wait_for(lambda: channel.config.routes[0].to[0].subset == {"version": "v3"}, WITHIN, "v3")
        assert channel.config.fallback == ({},)
        assert set(spread()) == {"one", "two"}

        registry.client.delete(KEY)
        wait_for(lambda: not channel.config.routes, WITHIN, "the code's config again")
        assert channel.config.fallback == ({},)


async def test_aio_channel_follows_the_config_in_etcd(
    etcd: EtcdServer, start_server: Callable[..., EchoServer], caplog: pytest.LogCaptureFixture
) -> None:
    one, two = _servers(start_server)
    async with grpc_etcd.aio.Registry(etcd.endpoint) as registry:
        await registry.register(SERVICE, address=one.address, version="v1")
        await registry.register(SERVICE, address=two.address, version="v2")
        channel = registry.channel(SERVICE, config=CODE_CONFIG)
        api = ApiStub(channel)

        async def spread(calls: int = 40) -> Counter[str]:
            return Counter(
                [who(await api.ApiTest(Request(input="x"), timeout=5)) for _ in range(calls)]
            )

        async def both() -> bool:
            return set(await spread()) == {"one", "two"}

        await async_wait_for(both, 10, "calls to both nodes")

        async def routed() -> bool:
            return bool(channel.config.routes)

        await registry.client.put(KEY, TO_V2)
        await async_wait_for(routed, WITHIN, "the config from etcd")
        assert await spread() == {"two": 40}

        async def warned() -> bool:
            return _invalid_was_seen(caplog)

        caplog.set_level(logging.WARNING, logger="grpc_etcd.config")
        await registry.client.put(KEY, INVALID)
        await async_wait_for(warned, WITHIN, "the warning for the bad config")
        assert await spread() == {"two": 40}

        async def unrouted() -> bool:
            return not channel.config.routes

        await registry.client.delete(KEY)
        await async_wait_for(unrouted, WITHIN, "the code's config again")
        assert channel.config.fallback == ({},)
        assert set(await spread()) == {"one", "two"}
