"""The watch cursor, fed synthetic responses (no server): what is delivered, what is dropped,
and which responses end the watch."""

from __future__ import annotations

import pytest

from grpc_etcd.registry.etcd import AuthError, CompactedError, EtcdError, KeyValue, WatchEvent
from grpc_etcd.registry.etcd._cursor import Cancel, WatchCursor, cancel_kind


def _put(rev: int, key: bytes = b"k") -> WatchEvent:
    return WatchEvent("put", KeyValue(key, b"v", rev, rev, 1, 0), None)


def _ok(cursor: WatchCursor, **overrides: object) -> Cancel | None:
    fields: dict[str, object] = {
        "compact_revision": 0,
        "canceled": False,
        "cancel_reason": "",
        "endpoint": "127.0.0.1:2379",
        "can_refresh_token": True,
    }
    fields.update(overrides)
    return cursor.check(**fields)  # type: ignore[arg-type]


def test_from_now_learns_its_start_from_the_created_response() -> None:
    cursor = WatchCursor()
    cursor.created(10)
    assert cursor.next_revision == 11
    assert cursor.events(12, [_put(11), _put(12)]) == (_put(11), _put(12))
    assert cursor.next_revision == 13 and cursor.seen_revision == 12


def test_a_recreated_watch_drops_what_was_delivered_already() -> None:
    cursor = WatchCursor(5)
    cursor.created(4)
    assert cursor.next_revision == 5  # an explicit start is kept
    assert cursor.events(7, [_put(5), _put(6), _put(7)]) == (_put(5), _put(6), _put(7))
    # the stream broke; the new one replays from 8, but a lagging member may resend 6-7
    cursor.created(9)
    assert cursor.events(9, [_put(6), _put(7)]) == ()
    assert cursor.next_revision == 8
    assert cursor.events(9, [_put(7), _put(8), _put(9)]) == (_put(8), _put(9))
    assert cursor.next_revision == 10


def test_progress_moves_the_start_of_the_next_stream() -> None:
    cursor = WatchCursor()
    cursor.created(3)
    cursor.progress(20)
    assert cursor.next_revision == 21 and cursor.seen_revision == 20
    cursor.progress(15)  # an older notification never moves it back
    assert cursor.next_revision == 21


def test_a_created_revision_below_what_was_seen_is_suspect() -> None:
    cursor = WatchCursor()
    assert not cursor.rollback_suspect(1)  # nothing seen yet
    cursor.created(10)
    cursor.events(12, [_put(12)])
    assert not cursor.rollback_suspect(12)
    assert cursor.rollback_suspect(11)
    assert cursor.rolled_back(12, "e:1") is None  # the member lagged, etcd did not go back
    error = cursor.rolled_back(3, "e:1")
    assert isinstance(error, CompactedError)
    assert error.compact_revision == 3 and "went back from 12 to 3" in str(error)


def test_an_ordinary_response_goes_on() -> None:
    assert _ok(WatchCursor()) is None


def test_compaction_ends_the_watch_naming_the_revisions() -> None:
    cursor = WatchCursor(4)
    with pytest.raises(CompactedError, match=r"revision 4 .*oldest revision left: 9") as info:
        _ok(cursor, compact_revision=9)
    assert info.value.compact_revision == 9 and info.value.endpoints == ("127.0.0.1:2379",)


@pytest.mark.parametrize(
    "reason",
    [
        "etcdserver: permission denied",
        "auth: invalid auth token",
        "etcdserver: user name is empty",
        "revision of auth store is old",
    ],
)
def test_an_auth_cancel_asks_for_one_token_refresh(reason: str) -> None:
    assert cancel_kind(reason) is Cancel.AUTH
    assert _ok(WatchCursor(), canceled=True, cancel_reason=reason) is Cancel.AUTH
    with pytest.raises(AuthError, match="watch refused"):
        _ok(WatchCursor(), canceled=True, cancel_reason=reason, can_refresh_token=False)


def test_any_other_cancel_is_an_error() -> None:
    assert cancel_kind("mvcc: required revision is a future revision") is Cancel.OTHER
    with pytest.raises(EtcdError, match="watch canceled by etcd: no reason given"):
        _ok(WatchCursor(), canceled=True)
