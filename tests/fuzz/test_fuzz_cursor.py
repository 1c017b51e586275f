"""The watch cursor (registry/etcd/_cursor.py) fed what a simulated etcd sends: streams that
break and are re-created (on members that lag and resend), revision jumps, compactions,
cancels, an etcd that loses its data. Whatever comes, the caller gets every event after its
start exactly once and in order, or one of the documented errors (and then nothing wrong)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fuzz_strategies import fuzzing
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.registry.etcd import AuthError, CompactedError, EtcdError, KeyValue, WatchEvent
from grpc_etcd.registry.etcd._cursor import Cancel, WatchCursor

EP = "127.0.0.1:2379"


def _event(revision: int) -> WatchEvent:
    return WatchEvent("put", KeyValue(b"/k", b"v", revision, revision, 1, 0), None)


@dataclass
class Etcd:
    """The watched range's history as etcd holds it."""

    events: list[int] = field(default_factory=list)  # revisions of the events in the range
    head: int = 1  # the store revision
    compacted: int = 0
    lost_data: bool = False

    def write(self, gap: int, in_range: bool) -> None:
        self.head += gap
        if in_range:
            self.events.append(self.head)

    def after(self, revision: int) -> list[int]:
        return [r for r in self.events if r >= revision]


actions = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 50), st.booleans()),
    st.tuples(st.just("create"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("deliver"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("progress"), st.just(0), st.booleans()),
    st.tuples(st.just("compact"), st.integers(0, 60), st.booleans()),
    st.tuples(st.just("cancel"), st.sampled_from([0, 1]), st.booleans()),
    st.tuples(st.just("wipe"), st.integers(1, 5), st.booleans()),
)


@fuzzing
@given(st.integers(0, 20), st.lists(actions, max_size=40))
def test_every_event_once_in_order_or_a_documented_error(
    start: int, steps: list[tuple[str, int, bool]]
) -> None:
    etcd = Etcd()
    for _ in range(5):  # some history before the watch
        etcd.write(1, True)
    cursor = WatchCursor(start)
    delivered: list[int] = []
    first: int | None = start or None  # the first revision the caller asked for
    stream: list[int] | None = None  # what the open stream will still send, in order
    ended = False  # by one of the documented errors
    try:
        for action, number, flag in steps:
            if action == "write":
                etcd.write(number, flag)
                if stream is not None and flag:
                    stream.append(etcd.head)
            elif action == "compact":
                etcd.compacted = max(etcd.compacted, min(number, etcd.head))
            elif action == "wipe":  # etcd restarted with its data lost: history goes back
                etcd = Etcd(head=number, lost_data=True)
                stream = None
            elif action == "create":  # a new stream, from where the cursor says
                stream = None
                wanted = cursor.next_revision
                if wanted and wanted <= etcd.compacted and not etcd.lost_data:
                    cursor.check(
                        compact_revision=etcd.compacted, canceled=True, cancel_reason="",
                        endpoint=EP, can_refresh_token=False,
                    )  # fmt: skip
                    raise AssertionError("a compacted start must raise CompactedError")
                created = max(0, etcd.head - number)  # a lagging member answers lower
                if cursor.rollback_suspect(created):
                    error = cursor.rolled_back(etcd.head, EP)  # the linearizable read
                    if error is not None:
                        assert etcd.lost_data, "a member that only lagged is no rollback"
                        raise error
                cursor.created(created)
                if first is None:
                    first = cursor.next_revision
                # from the asked revision, or from now; a lagging member resends a few more
                begin = wanted or created + 1
                resent = [r for r in etcd.events if r < begin][-flag * 2 :] if flag else []
                stream = resent + etcd.after(begin)
            elif action == "deliver" and stream:
                batch, stream = stream[:number], stream[number:]
                if batch[0] <= etcd.compacted and batch[0] >= cursor.next_revision:
                    cursor.check(
                        compact_revision=etcd.compacted, canceled=True, cancel_reason="",
                        endpoint=EP, can_refresh_token=False,
                    )  # fmt: skip
                    raise AssertionError("a watcher behind compaction must be told")
                assert cursor.check(
                    compact_revision=0, canceled=False, cancel_reason="", endpoint=EP,
                    can_refresh_token=False,
                ) is None  # fmt: skip
                revision = max(batch[-1], etcd.head if flag else batch[-1])
                fresh = cursor.events(revision, [_event(r) for r in batch])
                delivered += [e.kv.mod_revision for e in fresh]
            elif action == "progress" and stream is not None and not stream:
                cursor.progress(etcd.head)  # only a watcher that caught up hears one
            elif action == "cancel" and stream is not None:
                reason = "etcdserver: permission denied" if number else "some other reason"
                verdict = cursor.check(
                    compact_revision=0,
                    canceled=True,
                    cancel_reason=reason,
                    endpoint=EP,
                    can_refresh_token=flag,
                )
                assert verdict is Cancel.AUTH  # else it raised
                stream = None
    except (CompactedError, AuthError, EtcdError) as exc:
        ended = True
        assert exc.endpoints == (EP,)
        if isinstance(exc, CompactedError):
            assert etcd.lost_data or exc.compact_revision == etcd.compacted
    # no gap, no repeat, in order: a prefix of what happened since the first revision asked
    assert delivered == sorted(set(delivered))
    if not etcd.lost_data and first is not None:
        assert delivered == etcd.after(first)[: len(delivered)]
    if stream == [] and not ended and not etcd.lost_data and first is not None:
        assert delivered == etcd.after(first)  # caught up: everything
