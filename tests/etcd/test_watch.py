"""Watch: events, replay from an old revision, resume across restarts, compaction, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncGenerator

import pytest
from etcd_client_helpers import dead_endpoint, eventually, eventually_sync

from grpc_etcd.registry.etcd import (
    AsyncEtcdClient,
    CompactedError,
    EtcdClient,
    EtcdUnavailableError,
    WatchEvent,
    WatchResponse,
)
from grpc_etcd.testing import EtcdServer


async def _next(agen: AsyncGenerator[WatchResponse, None], within: float = 5) -> WatchResponse:
    async with asyncio.timeout(within):
        return await anext(agen)


async def _events(
    agen: AsyncGenerator[WatchResponse, None], count: int, within: float = 5
) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    while len(events) < count:
        events.extend((await _next(agen, within)).events)
    return events


async def test_watch_sees_put_and_delete(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        _, rev = await c.get_prefix("/svc/")
        async with contextlib.aclosing(
            c.watch("/svc/", prefix=True, start_revision=rev + 1, prev_kv=True)
        ) as w:
            r1 = await c.put("/svc/a", "1")
            await c.put("/other", "x")  # not under the prefix
            r2 = await c.put("/svc/a", "2")
            r3 = await c.delete("/svc/a")
            assert r3 == 1
            events = await _events(w, 3)
        assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
            ("put", b"/svc/a", b"1"),
            ("put", b"/svc/a", b"2"),
            ("delete", b"/svc/a", b""),
        ]
        assert [e.kv.mod_revision for e in events[:2]] == [r1, r2]
        assert events[0].prev_kv is None
        assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
        assert events[2].prev_kv is not None and events[2].prev_kv.value == b"2"


async def test_watch_single_key_from_now(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        await c.put("k", "before")
        w = c.watch("k")
        first = asyncio.ensure_future(_next(w))
        await asyncio.sleep(0.2)  # let the watch be created
        await c.put("kk", "other key")
        rev = await c.put("k", "after")
        resp = await first
        assert [(e.kv.value, e.kv.mod_revision) for e in resp.events] == [(b"after", rev)]
        await w.aclose()


async def test_watch_from_old_revision_replays(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        revs = [await c.put(f"/r/{i}", str(i)) for i in range(5)]
        await c.delete("/r/0")
        w = c.watch("/r/", prefix=True, start_revision=revs[1])
        events = await _events(w, 5)
        await w.aclose()
        assert [(e.type, e.kv.key) for e in events] == [
            ("put", b"/r/1"),
            ("put", b"/r/2"),
            ("put", b"/r/3"),
            ("put", b"/r/4"),
            ("delete", b"/r/0"),
        ]
        assert [e.kv.mod_revision for e in events] == [*revs[1:], revs[-1] + 1]


def test_sync_watch(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        rev = c.put("/s/a", "1")
        c.delete("/s/a")
        with c.watch("/s/", prefix=True, start_revision=rev) as w:
            seen: list[tuple[str, bytes]] = []
            for resp in w:
                seen.extend((e.type, e.kv.key) for e in resp.events)
                if len(seen) >= 2:
                    break
        assert seen == [("put", b"/s/a"), ("delete", b"/s/a")]


async def test_watch_across_restart_exactly_once(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        _, rev = await c.get_prefix("/x/")
        w = c.watch("/x/", prefix=True, start_revision=rev + 1)
        await c.put("/x/1", "a")
        await c.put("/x/2", "b")
        assert [e.kv.key for e in await _events(w, 2)] == [b"/x/1", b"/x/2"]
        pending = asyncio.ensure_future(_next(w, within=15))
        await asyncio.to_thread(etcd.stop)
        with pytest.raises(EtcdUnavailableError):
            await c.put("/x/lost", "impossible while down", timeout=0.5)
        await asyncio.to_thread(etcd.start)
        await c.put("/x/3", "c")
        await c.put("/x/4", "d")
        events = list((await pending).events)
        while len(events) < 2:
            events.extend((await _next(w)).events)
        assert [(e.kv.key, e.kv.value) for e in events] == [(b"/x/3", b"c"), (b"/x/4", b"d")]
        # nothing repeated or extra after the break
        await c.put("/x/5", "e")
        assert [e.kv.key for e in (await _next(w)).events] == [b"/x/5"]
        await w.aclose()


async def test_events_written_while_watch_is_broken_are_delivered(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c, AsyncEtcdClient(etcd.endpoint) as writer:
        _, rev = await c.get_prefix("/y/")
        w = c.watch("/y/", prefix=True, start_revision=rev + 1)
        await writer.put("/y/1", "a")
        assert [e.kv.key for e in await _events(w, 1)] == [b"/y/1"]
        # restart, then write before the watch had a chance to come back
        await asyncio.to_thread(etcd.restart)
        await writer.put("/y/2", "b")
        await writer.put("/y/3", "c")
        events = await _events(w, 2, within=10)
        assert [e.kv.key for e in events] == [b"/y/2", b"/y/3"]
        await w.aclose()


async def test_compaction_raises_compacted_error(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        first = await c.put("/c/k", "0")
        for i in range(1, 5):
            last = await c.put("/c/k", str(i))
        await c.compact(last)
        w = c.watch("/c/", prefix=True, start_revision=first)
        with pytest.raises(CompactedError) as info:
            await _next(w)
        assert info.value.compact_revision == last
        assert etcd.endpoint in str(info.value)
        # from the compaction revision on, the watch works
        w2 = c.watch("/c/", prefix=True, start_revision=info.value.compact_revision)
        events = await _events(w2, 1)
        assert events[0].kv.mod_revision == last
        await w2.aclose()


def test_sync_compaction_raises_compacted_error(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        first = c.put("k", "0")
        last = c.put("k", "1")
        c.compact(last)
        with c.watch("k", start_revision=first) as w, pytest.raises(CompactedError) as info:
            next(w)
        assert info.value.compact_revision == last


async def test_wiped_etcd_makes_watch_raise(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        for i in range(10):
            rev = await c.put("/w/k", str(i))
        w = c.watch("/w/", prefix=True, start_revision=rev)
        assert (await _next(w)).events[0].kv.mod_revision == rev
        pending = asyncio.ensure_future(_next(w, within=10))
        await asyncio.to_thread(etcd.restart, wipe=True)  # revision starts again at 1
        with pytest.raises(CompactedError, match="went back"):
            await pending


def _server_watchers(etcd: EtcdServer) -> int:
    """etcd's own count of its watchers (from its /metrics)."""
    with urllib.request.urlopen(f"http://{etcd.endpoint}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no watcher metric")


async def test_aclose_cancels_watch_on_server(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        w = c.watch("k")
        pending = asyncio.ensure_future(_next(w))
        await asyncio.sleep(0.2)
        assert len(c._session.open_streams) == 1
        assert await asyncio.to_thread(_server_watchers, etcd) == 1
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await w.aclose()
        assert c._session.open_streams == set()

        async def no_watchers() -> bool:
            return await asyncio.to_thread(_server_watchers, etcd) == 0

        await eventually(no_watchers, within=3)


def test_sync_iterator_close_cancels_watch_on_server(etcd: EtcdServer) -> None:
    with EtcdClient(etcd.endpoint) as c:
        rev = c.put("k", "v")
        w = c.watch("k", start_revision=rev)
        next(w)
        assert _server_watchers(etcd) == 1
        w.close()
        eventually_sync(lambda: _server_watchers(etcd) == 0, within=3)


async def test_close_ends_watch(etcd: EtcdServer) -> None:
    c = AsyncEtcdClient(etcd.endpoint)
    w = c.watch("k")

    async def consume() -> list[WatchResponse]:
        return [resp async for resp in w]

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)
    await c.close()
    async with asyncio.timeout(2):
        assert await task == []


def test_sync_close_ends_watch(etcd: EtcdServer) -> None:
    c = EtcdClient(etcd.endpoint)
    w = c.watch("k")
    c.put("other", "x")
    c.close()
    assert list(w) == []


async def test_watch_fails_over_to_live_endpoint(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient([dead_endpoint(), etcd.endpoint]) as c:
        rev = await c.put("k", "v")
        w = c.watch("k", start_revision=rev)
        assert (await _next(w)).events[0].kv.value == b"v"
        await w.aclose()


async def test_created_notify_then_read_misses_nothing(etcd: EtcdServer) -> None:
    async with AsyncEtcdClient(etcd.endpoint) as c:
        before = await c.put("/svc/old", "0")
        async with contextlib.aclosing(c.watch("/svc/", prefix=True, created_notify=True)) as w:
            created = await _next(w)
            assert created.created and created.events == () and created.revision >= before
            in_gap = await c.put("/svc/gap", "1")  # after the watch, before the read
            kvs, read_rev = await c.get_prefix("/svc/")
            assert {kv.key for kv in kvs} == {b"/svc/old", b"/svc/gap"} and read_rev >= in_gap
            after = await c.put("/svc/new", "2")
            events = await _events(w, 2)
        # the gap's event comes too (the caller drops it: it is at or below the read)
        assert [(e.kv.key, e.kv.mod_revision) for e in events] == [
            (b"/svc/gap", in_gap),
            (b"/svc/new", after),
        ]
