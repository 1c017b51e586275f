"""Fixtures for the channel tests: real grpc servers on loopback (see ``echo_servers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from echo_servers import EchoServer
from scripted import Lab


@pytest.fixture
def start_server() -> Iterator[Callable[..., EchoServer]]:
    """``start_server(name, port=None)``: a started EchoServer, stopped after the test."""
    servers: list[EchoServer] = []

    def start(name: str, port: int | None = None, credentials: Any = None) -> EchoServer:
        server = EchoServer(name).start(port, credentials)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Three scripted servers (``scripted.Lab``), one set a test module."""
    made = Lab()
    yield made
    made.close()
