"""Client-side health checking: one ``grpc.health.v1.Health/Watch`` stream per sub-channel.

The channel reads :attr:`serving` and is told through ``on_change()`` when it flips. Rules are
gRPC's (gRFC A17): a node is not serving until its first answer says SERVING; a server that
does not implement the health service (UNIMPLEMENTED) counts as serving, for good; any other
end of the stream counts as not serving and the stream is opened again with backoff.

:class:`HealthState` is that logic, once, with no I/O; :class:`HealthWatch` (a thread) and
:class:`AsyncHealthWatch` (a task) drive it over a sync or a ``grpc.aio`` channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..backoff import Backoff

__all__ = ["AsyncHealthWatch", "HealthState", "HealthWatch"]

log = logging.getLogger("grpc_etcd.health")

# gRPC re-opens health streams with its connection backoff (1 s, up to 120 s); a node coming
# back should get traffic sooner than that, and one stream per node costs little.
RETRY_BASE = 0.1
RETRY_CAP = 5.0
_SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthState:
    """Whether a node serves, from the answers and ends of its Watch streams (pure)."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.serving = False
        self.answered = False
        """True once the server answered (or said UNIMPLEMENTED): until then the node counts
        as still connecting, as gRPC keeps such a sub-channel CONNECTING."""
        self.finished = False
        """True once the server said UNIMPLEMENTED: it serves, no more watching."""
        self._backoff = backoff or Backoff(RETRY_BASE, RETRY_CAP)

    def on_status(self, status: int) -> bool:
        """An answer (a HealthCheckResponse status); True when ``serving`` changed."""
        self._backoff.reset()
        self.answered = True
        return self._set(status == _SERVING)

    def on_end(self, code: grpc.StatusCode | None) -> tuple[bool, float | None]:
        """The stream ended (``code`` None: without an error). Returns (changed, delay before
        the next stream or None for never)."""
        if code is grpc.StatusCode.UNIMPLEMENTED:
            self.finished = self.answered = True
            return self._set(True), None
        return self._set(False), self._backoff.next_delay()

    def _set(self, serving: bool) -> bool:
        changed = serving != self.serving
        self.serving = serving
        return changed


def _request(service_name: str) -> Any:
    return health_pb2.HealthCheckRequest(service=service_name)


class _Watch:
    """What both watches share: the stub, the state, and telling the channel of a change."""

    def __init__(
        self,
        channel: grpc.Channel | grpc.aio.Channel,
        service_name: str,
        on_change: Callable[[], None],
    ) -> None:
        self._watch = health_pb2_grpc.HealthStub(channel).Watch
        self.service_name = service_name
        self._on_change = on_change
        self._state = HealthState()

    @property
    def serving(self) -> bool:
        """Whether the node's last answer was SERVING (or it has no health service)."""
        return self._state.serving

    @property
    def answered(self) -> bool:
        """Whether the node has answered at all (before that it counts as connecting)."""
        return self._state.answered

    def _open(self) -> Any:
        return self._watch(_request(self.service_name), wait_for_ready=True)

    def _on_answer(self, response: Any) -> None:
        if self._state.on_status(response.status):
            self._on_change()

    def _on_end(self, code: grpc.StatusCode | None) -> float | None:
        """The stream ended: the delay before the next one (None: never)."""
        changed, delay = self._state.on_end(code)
        if changed:
            self._on_change()
        return delay


class HealthWatch(_Watch):
    """Watches one sync sub-channel's health in a daemon thread until :meth:`close`."""

    def __init__(
        self,
        channel: grpc.Channel,
        service_name: str,
        on_change: Callable[[], None],
        *,
        name: str = "",
    ) -> None:
        super().__init__(channel, service_name, on_change)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"grpc-etcd health {name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop watching (cancels the stream); returns at once."""
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        while not self._closed.is_set():
            code: grpc.StatusCode | None = None
            try:
                call = self._open()
                with self._lock:
                    self._call = call
                if self._closed.is_set():
                    call.cancel()
                for response in call:
                    self._on_answer(response)
            except grpc.RpcError as exc:
                code = exc.code()
            except ValueError:  # the channel was closed under us: nothing left to watch
                return
            if self._closed.is_set():
                return
            delay = self._on_end(code)
            if delay is None or self._closed.wait(delay):
                return


class AsyncHealthWatch(_Watch):
    """The asyncio twin of :class:`HealthWatch`: a task on the running loop."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        service_name: str,
        on_change: Callable[[], None],
        *,
        name: str = "",
    ) -> None:
        super().__init__(channel, service_name, on_change)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"grpc-etcd health {name}"
        )

    def close(self) -> None:
        """Stop watching (cancels the task); returns at once."""
        self._task.cancel()

    async def wait_closed(self) -> None:
        """Wait for the task to end after :meth:`close`."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            code: grpc.StatusCode | None = None
            try:
                async for response in self._open():
                    self._on_answer(response)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            except grpc.aio.UsageError:  # the channel was closed under us
                return
            delay = self._on_end(code)
            if delay is None:
                return
            await asyncio.sleep(delay)
