"""Helpers for the etcd client tests (the ``etcd``/``etcd_cluster``/``etcd_factory`` fixtures
come from grpc_etcd's pytest plugin)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest


def dead_endpoint() -> str:
    """A loopback address where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 5.0, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns True, failing the test after ``within`` s."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], bool], within: float = 5.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        time.sleep(interval)
