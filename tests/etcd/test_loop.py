"""grpc_etcd._loop.LoopThread: run, submit, exceptions, iterate (+ close / GC), close."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from grpc_etcd._loop import LoopClosedError, LoopThread


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    with LoopThread(name="test-loop") as loop_thread:
        yield loop_thread


def test_run_returns_result_on_loop_thread(lt: LoopThread) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert lt.run(where()) == "test-loop"
    assert lt.thread.daemon
    assert not lt.in_loop_thread()


def test_run_reraises_exception(lt: LoopThread) -> None:
    class Boom(Exception):
        pass

    async def fail() -> None:
        raise Boom("x")

    with pytest.raises(Boom, match="x"):
        lt.run(fail())


def test_run_timeout_cancels_coroutine(lt: LoopThread) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        lt.run(slow(), timeout=0.1)
    assert cancelled.wait(2)


def test_run_from_loop_thread_is_refused(lt: LoopThread) -> None:
    async def inner() -> int:
        return 1

    async def outer() -> None:
        coro = inner()
        with pytest.raises(RuntimeError, match="own thread"):
            lt.run(coro)

    lt.run(outer())


def test_submit_returns_concurrent_future(lt: LoopThread) -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    futures = [lt.submit(add(i, i)) for i in range(10)]
    assert [f.result(5) for f in futures] == [2 * i for i in range(10)]


def test_call_soon_runs_on_loop(lt: LoopThread) -> None:
    seen: list[str] = []
    done = threading.Event()

    def cb(x: str) -> None:
        seen.append(f"{x}@{threading.current_thread().name}")
        done.set()

    lt.call_soon(cb, "hi")
    assert done.wait(2)
    assert seen == ["hi@test-loop"]


async def _count(n: int, log: list[str], delay: float = 0.0) -> AsyncIterator[int]:
    try:
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield i
        log.append("exhausted")
    finally:
        log.append("closed")


def test_iterate_yields_all_items_then_stops(lt: LoopThread) -> None:
    log: list[str] = []
    it = lt.iterate(_count(5, log))
    assert list(it) == [0, 1, 2, 3, 4]
    assert next(it, None) is None
    assert log == ["exhausted", "closed"]


def test_iterate_reraises_exception(lt: LoopThread) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad item")

    it = lt.iterate(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad item"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_iterate_close_acloses_async_iterator(lt: LoopThread) -> None:
    log: list[str] = []
    it = lt.iterate(_count(1000, log, delay=0.001))
    assert next(it) == 0
    it.close()
    assert log == ["closed"]  # aclose'd, not exhausted
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # idempotent


def test_iterate_close_before_first_item(lt: LoopThread) -> None:
    log: list[str] = []
    with lt.iterate(_count(1000, log, delay=0.001)) as it:
        pass
    assert list(it) == []


def test_iterate_context_manager_closes(lt: LoopThread) -> None:
    log: list[str] = []
    with lt.iterate(_count(1000, log, delay=0.001)) as it:
        assert next(it) == 0
    assert log == ["closed"]


def test_iterate_garbage_collected_closes(lt: LoopThread) -> None:
    log: list[str] = []
    it = lt.iterate(_count(1000, log, delay=0.001))
    assert next(it) == 0
    del it
    gc.collect()
    deadline = time.monotonic() + 2
    while log != ["closed"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == ["closed"]


def test_iterate_prefetch_is_bounded(lt: LoopThread) -> None:
    produced: list[int] = []

    async def gen() -> AsyncIterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    it = lt.iterate(gen(), prefetch=2)
    assert next(it) == 0
    time.sleep(0.1)  # an absence check: give an unbounded producer time to run ahead
    # one handed out + at most 2 waiting in the queue (+1 being fetched)
    assert len(produced) <= 4
    it.close()


def test_iterate_blocked_consumer_sees_end_when_loop_closes() -> None:
    lt = LoopThread()

    async def forever() -> AsyncIterator[int]:
        yield 1
        await asyncio.Event().wait()
        yield 2  # pragma: no cover

    it = lt.iterate(forever())
    assert next(it) == 1
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(next(it, "end")))
    t.start()
    time.sleep(0.05)
    lt.close()
    t.join(2)
    assert result == ["end"]


def test_close_cancels_pending_tasks_and_joins() -> None:
    lt = LoopThread()
    started = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    lt.submit(forever())
    assert started.wait(5)
    lt.close()
    assert cancelled.is_set()
    assert not lt.thread.is_alive()
    assert lt.closed
    lt.close()  # idempotent
    coro = asyncio.sleep(0)
    with pytest.raises(LoopClosedError):
        lt.submit(coro)
    with pytest.raises(LoopClosedError):
        lt.run(asyncio.sleep(0))


def test_run_interrupted_by_close_raises_loop_closed() -> None:
    lt = LoopThread()
    errors: list[BaseException] = []
    running = threading.Event()

    async def long_call() -> None:
        running.set()
        await asyncio.sleep(30)

    def waiter() -> None:
        try:
            lt.run(long_call())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    assert running.wait(5)
    lt.close()
    t.join(2)
    assert len(errors) == 1 and isinstance(errors[0], LoopClosedError)


def test_many_threads_share_one_loop(lt: LoopThread) -> None:
    results: list[int] = []
    lock = threading.Lock()

    async def work(i: int) -> int:
        await asyncio.sleep(0.001)
        return i

    def worker(i: int) -> None:
        r = lt.run(work(i))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(20))
