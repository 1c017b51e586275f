"""Drive asyncio code from synchronous code: an event loop on a private daemon thread.

The sync twins of the asyncio classes (``EtcdClient``, the sync ``Registry``, ...) keep their
logic in the asyncio implementation and run it on a :class:`LoopThread`::

    loop = LoopThread()
    value = loop.run(client.get(b"k"), timeout=5)          # block for a coroutine's result
    future = loop.submit(some_coroutine())                 # concurrent.futures.Future
    for item in loop.iterate(async_iterator):             # async iterator -> sync iterator
        ...
    loop.close()                                           # cancel what is left, stop, join

Anything created on the loop (grpc.aio channels, tasks, asyncio primitives) belongs to it and
must only be touched from coroutines or callbacks running on it (``run``, ``submit``,
``call_soon``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar, cast

from ._closing import Closing

__all__ = ["LoopClosedError", "LoopThread", "SyncIterator"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

_counter = itertools.count(1)


class LoopClosedError(RuntimeError):
    """The LoopThread is closed (or closing): it runs nothing any more."""


class LoopThread(Closing):
    """An asyncio event loop running forever on its own daemon thread.

    Thread-safe: ``run``/``submit``/``iterate``/``call_soon``/``close`` may be called from any
    thread. ``run`` and ``close`` must not be called *from the loop's own thread* (that would
    wait for itself): they raise ``RuntimeError`` there.
    """

    def __init__(self, name: str | None = None) -> None:
        self._name = name or f"grpc-etcd-loop-{next(_counter)}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._closing = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            finally:
                self._loop.close()

    # -- properties

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (to create loop-bound objects from coroutines run on it)."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closing

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread

    # -- running things

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; cancelling the returned future cancels the task."""
        if self._closing:
            coro.close()
            raise LoopClosedError(f"{self._name} is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it is done; return its result or re-raise
        its exception. After ``timeout`` seconds the coroutine is cancelled and ``TimeoutError``
        raised; a ``KeyboardInterrupt`` while waiting cancels it too."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("LoopThread.run() called from the loop's own thread (deadlock)")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"coroutine did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            if self._closing:  # cancelled by close(): say so, rather than "cancelled"
                raise LoopClosedError(f"{self._name} closed while the call was running") from None
            raise
        except BaseException:
            if not future.done():  # KeyboardInterrupt / SystemExit while waiting
                future.cancel()
            raise

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback(*args)`` on the loop thread, soon (thread-safe)."""
        if self._closing:
            raise LoopClosedError(f"{self._name} is closed")
        self._loop.call_soon_threadsafe(callback, *args)

    def iterate(self, aiterator: AsyncIterator[T], *, prefetch: int = 1) -> SyncIterator[T]:
        """A synchronous iterator over ``aiterator``, which is driven on the loop.

        Up to ``prefetch`` items are fetched ahead (``prefetch >= 1``) and wait in a queue for
        the consumer; the producer stops fetching while the queue is full. Exceptions of the
        async iterator are re-raised by ``next()``. Closing the sync iterator (``close()``, the
        end of a ``with`` block, or garbage collection) cancels the pump and ``aclose()``s the
        async iterator, on the loop. If the loop is closed while a consumer waits, the consumer
        sees the end of the iteration.
        """
        return SyncIterator(self, aiterator, prefetch=prefetch)

    # -- shutdown

    def close(self, timeout: float | None = 10.0) -> None:
        """Cancel every task still on the loop (waiting for them to finish), close async
        generators, stop the loop and join its thread. Idempotent."""
        if self.in_loop_thread():
            raise RuntimeError("LoopThread.close() called from the loop's own thread")
        with self._close_lock:
            if self._closing:
                self._thread.join(timeout)
                return
            self._closing = True
        if self._loop.is_closed():
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # loop already stopped/closed
            pass
        self._thread.join(timeout)

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        for _ in range(3):  # tasks may spawn tasks while they unwind
            tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "running"
        return f"<LoopThread {self._name} {state}>"


class _End:
    pass


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = _End()


class _Pump(Generic[T]):
    """The loop side of a SyncIterator. It holds no reference to the SyncIterator, so that
    the latter can be garbage collected (and then close the pump) while the pump waits."""

    def __init__(self, aiterator: AsyncIterator[T], prefetch: int) -> None:
        self.aiterator: AsyncIterator[T] | None = aiterator
        self.prefetch = prefetch
        self.queue: queue.SimpleQueue[T | _End | _Raise] = queue.SimpleQueue()
        self.done = threading.Event()
        self.credits: asyncio.Semaphore | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the pump (on the loop thread); works before the pump started too."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        aiterator = self.aiterator
        assert aiterator is not None
        self.task = asyncio.current_task()
        self.credits = credits = asyncio.Semaphore(self.prefetch)
        try:
            while not self.cancelled:
                await credits.acquire()
                try:
                    item = await anext(aiterator)
                except StopAsyncIteration:
                    self.queue.put(_END)
                    return
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    self.queue.put(_Raise(exc))
                    return
                self.queue.put(item)
            self.queue.put(_END)
        except asyncio.CancelledError:
            self.queue.put(_END)  # a consumer still waiting sees the end
            raise
        finally:
            self.aiterator = None
            aclose = cast(
                "Callable[[], Awaitable[None]] | None", getattr(aiterator, "aclose", None)
            )
            try:
                if aclose is not None:
                    await aclose()
            except BaseException:
                _log.exception("error while closing %r", aiterator)
            finally:
                self.done.set()

    def release_credit(self) -> None:
        if self.credits is not None:
            self.credits.release()


class SyncIterator(Closing, Generic[T]):
    """The synchronous view of an async iterator, made by :meth:`LoopThread.iterate`.

    Iterate it from one thread at a time. ``close()`` is thread-safe and idempotent.
    """

    def __init__(self, runner: LoopThread, aiterator: AsyncIterator[T], *, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        self._runner = runner
        self._finished = False  # the consumer has seen the end (or an exception)
        self._pump = _Pump(aiterator, prefetch)
        self._future: concurrent.futures.Future[None] = runner.submit(self._pump.run())

    def __iter__(self) -> SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._pump.queue.get()
        if isinstance(item, _End):
            self._finished = True
            raise StopIteration
        if isinstance(item, _Raise):
            self._finished = True
            exc = item.exc
            del item  # no reference cycle through the traceback
            raise exc
        with contextlib.suppress(LoopClosedError, RuntimeError):
            self._runner.call_soon(self._pump.release_credit)
        return item

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the iteration: cancel the pump and ``aclose()`` the async iterator on the loop,
        waiting up to ``timeout`` s for that (no wait when called on the loop thread)."""
        self._finished = True
        if self._pump.done.is_set():
            return
        try:
            self._runner.call_soon(self._pump.cancel)
        except (LoopClosedError, RuntimeError):
            return
        if not self._runner.in_loop_thread():
            self._pump.done.wait(timeout)

    def __del__(self) -> None:
        # garbage collected: stop the pump without waiting (we may be on any thread)
        try:
            if not self._pump.done.is_set():
                self._runner.call_soon(self._pump.cancel)
        except Exception:  # interpreter shutdown, loop gone, ...
            pass
