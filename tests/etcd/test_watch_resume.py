"""Watch resume logic, driven by a scripted fake Watch service (exact revisions, progress
notifications, duplicates), so every step is deterministic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest

from grpc_etcd.registry.etcd import AsyncEtcdClient, WatchResponse
from grpc_etcd.registry.etcd._proto import etcd_pb2 as pb

Script = Callable[
    [pb.WatchCreateRequest, "grpc.aio.ServicerContext[pb.WatchRequest, pb.WatchResponse]"],
    AsyncIterator[pb.WatchResponse],
]


def _created(rev: int) -> pb.WatchResponse:
    return pb.WatchResponse(header=pb.ResponseHeader(revision=rev), created=True)


def _put(key: bytes, rev: int, header_rev: int | None = None) -> pb.WatchResponse:
    return pb.WatchResponse(
        header=pb.ResponseHeader(revision=header_rev or rev),
        events=[pb.Event(type=pb.Event.PUT, kv=pb.KeyValue(key=key, mod_revision=rev, value=b"v"))],
    )


def _progress(rev: int) -> pb.WatchResponse:
    return pb.WatchResponse(header=pb.ResponseHeader(revision=rev))


class FakeWatch:
    """Each Watch stream runs the next session function of ``sessions`` with the create
    request; what it yields is sent; when it returns the stream fails with UNAVAILABLE."""

    def __init__(self, sessions: list[Script]) -> None:
        self.sessions = sessions
        self.creates: list[pb.WatchCreateRequest] = []
        self.server = grpc.aio.server()
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        handler = grpc.stream_stream_rpc_method_handler(
            self._watch,
            request_deserializer=pb.WatchRequest.FromString,
            response_serializer=pb.WatchResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("etcdserverpb.Watch", {"Watch": handler}),)
        )

    async def _watch(
        self,
        requests: AsyncIterator[pb.WatchRequest],
        context: grpc.aio.ServicerContext[pb.WatchRequest, pb.WatchResponse],
    ) -> AsyncIterator[pb.WatchResponse]:
        request = await anext(requests)
        self.creates.append(request.create_request)
        session = self.sessions[len(self.creates) - 1]
        async for response in session(request.create_request, context):
            yield response
        await context.abort(grpc.StatusCode.UNAVAILABLE, "fake stream broken")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def fake_watch(sessions: list[Script]) -> AsyncIterator[FakeWatch]:
    fake = FakeWatch(sessions)
    await fake.server.start()
    try:
        yield fake
    finally:
        await fake.server.stop(None)


async def _first_session(
    req: pb.WatchCreateRequest, ctx: object
) -> AsyncIterator[pb.WatchResponse]:
    yield _created(10)
    yield _put(b"a", 11)
    yield _progress(15)


async def _second_session(
    req: pb.WatchCreateRequest, ctx: object
) -> AsyncIterator[pb.WatchResponse]:
    yield _created(15)
    # a duplicate of an event already delivered is dropped; the new one passes
    yield pb.WatchResponse(
        header=pb.ResponseHeader(revision=16),
        events=[*_put(b"a", 11).events, *_put(b"b", 16).events],
    )
    await asyncio.Event().wait()  # stay open


async def _collect(c: AsyncEtcdClient, n: int, **kwargs: bool) -> list[WatchResponse]:
    out: list[WatchResponse] = []
    async with contextlib.aclosing(c.watch("a", **kwargs)) as w, asyncio.timeout(5):
        async for resp in w:
            out.append(resp)
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("progress_notify", [True, False])
async def test_resume_after_progress_uses_its_revision(progress_notify: bool) -> None:
    async with (
        fake_watch([_first_session, _second_session]) as fake,
        AsyncEtcdClient(fake.endpoint) as c,
    ):
        got = await _collect(c, 3 if progress_notify else 2, progress_notify=progress_notify)
        # the first create asks for "now"; the re-create starts after the progress revision
        assert [cr.start_revision for cr in fake.creates] == [0, 16]
        assert all(cr.progress_notify is progress_notify for cr in fake.creates)
        summary = [
            (r.revision, r.progress_notify, [e.kv.mod_revision for e in r.events]) for r in got
        ]
        expected = [(11, False, [11]), (15, True, []), (16, False, [16])]
        assert summary == (expected if progress_notify else [expected[0], expected[2]])


async def test_resume_from_last_event_not_from_event_header() -> None:
    """Catching up, etcd sends events with the *current* store revision in the header; the
    resume point must come from the events, or the rest of the backlog would be skipped."""

    async def first(req: pb.WatchCreateRequest, ctx: object) -> AsyncIterator[pb.WatchResponse]:
        assert req.start_revision == 5
        yield _created(100)
        yield _put(b"a", 5, header_rev=100)  # backlog batch, header = current revision

    async def second(req: pb.WatchCreateRequest, ctx: object) -> AsyncIterator[pb.WatchResponse]:
        yield _created(100)
        yield _put(b"a", 6, header_rev=100)
        await asyncio.Event().wait()

    async with fake_watch([first, second]) as fake, AsyncEtcdClient(fake.endpoint) as c:
        w = c.watch("a", start_revision=5)
        async with asyncio.timeout(5):
            revs = [(await anext(w)).events[0].kv.mod_revision for _ in range(2)]
        await w.aclose()
        assert revs == [5, 6]
        assert [cr.start_revision for cr in fake.creates] == [5, 6]


async def test_prefix_watch_request_fields() -> None:
    async def session(req: pb.WatchCreateRequest, ctx: object) -> AsyncIterator[pb.WatchResponse]:
        yield _created(1)
        await asyncio.Event().wait()

    async with fake_watch([session]) as fake, AsyncEtcdClient(fake.endpoint) as c:
        w = c.watch("/svc/", prefix=True, prev_kv=True, start_revision=7)
        task = asyncio.ensure_future(anext(w))
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await w.aclose()
        (create,) = fake.creates
        assert (create.key, create.range_end, create.start_revision, create.prev_kv) == (
            b"/svc/",
            b"/svc0",
            7,
            True,
        )
