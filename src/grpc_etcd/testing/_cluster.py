"""Several etcd members on loopback: ``EtcdCluster``."""

from __future__ import annotations

import logging
import os
import time

from .._closing import OpenClosing
from ._binary import _run_etcdctl
from ._errors import EtcdServerError, EtcdStartError
from ._server import _START_ATTEMPTS, EtcdServer, _ClusterConfig, _empty_dir, _free_ports

__all__ = ["EtcdCluster"]

log = logging.getLogger("grpc_etcd.testing")


class EtcdCluster(OpenClosing):
    """``size`` etcd members on loopback, each with its own temp dir; a context manager.

    ``members[i]`` are ``EtcdServer`` objects (``stop()``, ``kill()``, ``etcdctl()``, ...);
    ``stop(i)``/``start(i)`` act on one member, ``leader()`` finds the current leader.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self.start_timeout = start_timeout
        self.members = [
            EtcdServer(name=f"m{i}", binary=binary, start_timeout=start_timeout)
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        """The client endpoints (``"127.0.0.1:PORT"``) of all members, running or not."""
        return [m.endpoint for m in self.members]

    def _open(self) -> None:  # what ``with`` starts
        self.start_all()

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.members!r}>"

    def start_all(self, timeout: float | None = None) -> None:
        """Start all members at once (a new cluster needs a quorum); wait until all are healthy."""
        timeout = self.start_timeout if timeout is None else timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = _free_ports(2 * len(self.members))
            for i, m in enumerate(self.members):
                m.client_port, m.peer_port = ports[2 * i], ports[2 * i + 1]
            config = _ClusterConfig(",".join(f"{m.name}={m.peer_url}" for m in self.members))
            for m in self.members:
                m._cluster = config
                m._spawn()
            try:
                self.wait_healthy(timeout)
                return
            except EtcdStartError as exc:
                for m in self.members:
                    m.kill()
                    _empty_dir(m.data_dir)
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise
                log.warning("etcd cluster: port taken, starting again (attempt %d)", attempt)

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every running member answers ``/health`` true."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m._res.proc is not None:
                m.wait_healthy(max(0.0, deadline - time.monotonic()))

    def stop(self, i: int, grace: float = 5.0) -> None:
        """Stop member ``i`` (SIGTERM; a stopping leader hands leadership over first)."""
        self.members[i].stop(grace)

    def kill(self, i: int) -> None:
        """Kill member ``i`` (SIGKILL): the others notice only after the election timeout."""
        self.members[i].kill()

    def start(self, i: int, timeout: float | None = None) -> None:
        """Start member ``i`` again (same ports, same data) and wait until it is healthy."""
        self.members[i].start(timeout)

    def leader(self, timeout: float = 5.0) -> int:
        """The index of the member that is leader now, waiting up to ``timeout`` for an election."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.members):
                if not m.running:
                    continue
                try:
                    st = m.status()
                except (OSError, ValueError):
                    continue
                if st.get("leader") and st["leader"] == st.get("header", {}).get("member_id"):
                    return i
            if time.monotonic() > deadline:
                raise EtcdServerError(f"no member of the cluster was leader within {timeout:.1f} s")
            time.sleep(0.01)

    def etcdctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``etcdctl ARGS`` against all running members and return its stdout."""
        urls = [m.url for m in self.members if m.running]
        return _run_etcdctl(self.members[0].etcdctl_binary, urls, [], args, timeout)

    def close(self) -> None:
        """Kill every member (their data is thrown away) and remove their temp dirs."""
        for m in self.members:
            m.kill()
        for m in self.members:
            m.close()
