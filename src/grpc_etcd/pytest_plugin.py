"""pytest fixtures that run real etcd servers (loaded through the ``pytest11`` entry point).

- ``etcd``: a fresh, empty ``EtcdServer`` for each test (about 0.1 s to start).
- ``etcd_cluster``: a fresh three-member ``EtcdCluster`` for each test.
- ``etcd_factory``: a function that starts servers with options (``auth=...``, ``tls=...``),
  all stopped at the end of the test.
- ``etcd_session``: one ``EtcdServer`` shared by the whole session (use your own key prefixes).

Set ``GRPC_ETCD_ETCD_BIN`` to run them against another etcd binary. Disable the plugin with
``-p no:grpc_etcd``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from grpc_etcd.testing import (
    EtcdCluster,
    EtcdServer,
    EtcdServerError,
    etcd_version,
    find_etcd,
)

__all__ = ["etcd", "etcd_cluster", "etcd_factory", "etcd_session"]


def pytest_report_header(config: pytest.Config) -> str:
    """Say which etcd binary the fixtures run, in pytest's header."""
    try:
        binary = find_etcd()
        return f"grpc-etcd: etcd {etcd_version(binary)} ({binary})"
    except (EtcdServerError, OSError):
        return "grpc-etcd: no etcd binary found (the etcd fixtures will say how to install one)"


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh, empty etcd for this test; ``etcd.endpoint`` is ``"127.0.0.1:PORT"``."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh three-member etcd cluster on loopback for this test."""
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture
def etcd_factory() -> Iterator[Callable[..., EtcdServer]]:
    """``etcd_factory(**EtcdServer_kwargs)`` starts a server; all are closed after the test."""
    servers: list[EtcdServer] = []

    def make(**kwargs: Any) -> EtcdServer:
        server = EtcdServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.close()


@pytest.fixture(scope="session")
def etcd_session() -> Iterator[EtcdServer]:
    """One etcd shared by every test of the session; tests must not rely on it being empty."""
    with EtcdServer() as server:
        yield server
