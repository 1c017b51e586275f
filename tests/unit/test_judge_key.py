"""What a registration's periodic check decides from the key it reads (pure)."""

from __future__ import annotations

from grpc_etcd.registry.etcd import KeyValue
from grpc_etcd.registry.registration import KeyState, judge_key

RECORD = b'{"node":{"address":"127.0.0.1:5000"}}'


def _kv(lease: int, value: bytes = RECORD) -> KeyValue:
    return KeyValue(b"/k", value, 1, 2, 1, lease)


def test_judge_key() -> None:
    assert judge_key(_kv(7), 7, RECORD) is KeyState.OURS
    assert judge_key(None, 7, RECORD) is KeyState.MISSING
    assert judge_key(_kv(7, b"{}"), 7, RECORD) is KeyState.CHANGED
    assert judge_key(_kv(8), 7, RECORD) is KeyState.TAKEN  # never overwritten, never deleted
    assert judge_key(_kv(0), 7, RECORD) is KeyState.STRAY  # written without a lease: no owner
