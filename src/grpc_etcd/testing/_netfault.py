"""A TCP proxy on 127.0.0.1 that a test can cut and restore: a real network fault, no fake::

with TcpProxy(etcd.endpoint) as proxy:      # clients dial proxy.endpoint
    proxy.cut()                          # drops every connection, refuses new ones
    ...                                  # etcd itself goes on (writes, compaction)
    proxy.restore()
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from .._closing import Closing

__all__ = ["TcpProxy"]


class TcpProxy(Closing):
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` / ``restore()`` simulate a partition."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._waker_r, self._waker_w = socket.socketpair()
        self._selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close every forwarded connection and refuse new ones until ``restore()``."""
        self._cut.set()
        self._wake()

    def restore(self) -> None:
        """Accept and forward connections again."""
        self._cut.clear()
        self._wake()

    def close(self) -> None:
        """Stop the proxy thread and close every socket."""
        self._stop.set()
        self._wake()
        self._thread.join(5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._waker_w.send(b"x")

    def _drop(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._cut.is_set() and self._peers:
                    for sock in list(self._peers):
                        self._drop(sock)
                for key, _ in self._selector.select(timeout=1.0):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    if key.data == "wake":
                        ready.recv(4096)
                    elif ready is self._listener:
                        self._accept()
                    elif ready in self._peers:
                        self._forward(ready)
        finally:
            for sock in list(self._peers):
                self._drop(sock)
            self._listener.close()
            self._waker_r.close()
            self._waker_w.close()
            self._selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._cut.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self._selector.register(client, selectors.EVENT_READ, "peer")
        self._selector.register(upstream, selectors.EVENT_READ, "peer")

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        other = self._peers[sock]
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(sock)
