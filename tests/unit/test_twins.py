"""Sync and asyncio twins keep the same public methods and signatures, but for the listed ones."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd.registry.etcd import AsyncEtcdClient, EtcdClient

# Why each difference is meant. A name listed here is skipped; any other drift fails.
INTENDED: dict[str, dict[str, str]] = {
    "Registry": {},
    "Registry.channel": {
        "interceptors": "grpc.aio channels take interceptors; sync users wrap with "
        "grpc.intercept_channel()",
    },
    "Registration": {
        "__init__": "made by Registry.register: the sync one wraps the aio one on a loop thread",
        "start": "the aio registration's first write, awaited by aio.Registry.register",
        "lease_id": "a plain attribute on the aio twin",
        "state": "a plain attribute on the aio twin",
        "ttl": "a plain attribute on the aio twin",
    },
    "BalancedChannel": {
        "subscribe": "grpc.Channel's connectivity API",
        "unsubscribe": "grpc.Channel's connectivity API",
        "get_state": "grpc.aio.Channel's connectivity API",
        "wait_for_state_change": "grpc.aio.Channel's connectivity API",
        "channel_ready": "grpc.aio.Channel's connectivity API",
        "close": "grpc.aio.Channel.close(grace)",
    },
    "BalancedChannel.__init__": {"interceptors": "as Registry.channel"},
    "EtcdClient": {
        "aio": "the sync client drives this AsyncEtcdClient",
        "loop": "the sync client's LoopThread",
        "endpoints": "a plain attribute on the aio twin",
    },
    "EtcdClient.__init__": {"loop": "share a LoopThread with other sync objects"},
    "channel": {},
}

PAIRS: list[tuple[str, Any, Any]] = [
    ("Registry", grpc_etcd.Registry, grpc_etcd.aio.Registry),
    ("Registration", grpc_etcd.Registration, grpc_etcd.aio.Registration),
    ("BalancedChannel", grpc_etcd.BalancedChannel, grpc_etcd.aio.BalancedChannel),
    ("EtcdClient", EtcdClient, AsyncEtcdClient),
]


def _members(cls: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_") and name != "__init__":
            continue
        found[name] = value
    return found


def _params(fn: Any, skip: dict[str, str]) -> list[tuple[str, str, object, object]]:
    return [
        (p.name, p.kind.name, p.default, p.annotation)
        for p in inspect.signature(fn).parameters.values()
        if p.name not in skip
    ]


def _differences(label: str, sync: Any, aio: Any) -> list[str]:
    meant = INTENDED[label]
    sync_members, aio_members = _members(sync), _members(aio)
    found = [
        f"{label}.{name} only in one twin"
        for name in sorted(set(sync_members) ^ set(aio_members))
        if name not in meant
    ]
    for name in sorted(set(sync_members) & set(aio_members)):
        if name in meant:
            continue
        mine, theirs = sync_members[name], aio_members[name]
        if isinstance(mine, property) or isinstance(theirs, property):
            if type(mine) is not type(theirs):
                found.append(f"{label}.{name}: property on one twin only")
            continue
        if not callable(mine):
            continue
        skip = INTENDED.get(f"{label}.{name}", {})
        if _params(mine, skip) != _params(theirs, skip):
            found.append(
                f"{label}.{name}: {inspect.signature(mine)} != {inspect.signature(theirs)}"
            )
    return found


@pytest.mark.parametrize(("label", "sync", "aio"), PAIRS, ids=[p[0] for p in PAIRS])
def test_twins_have_the_same_public_methods(label: str, sync: type, aio: type) -> None:
    assert _differences(label, sync, aio) == []


def test_the_target_functions_are_twins() -> None:
    skip = INTENDED["Registry.channel"]
    assert _params(grpc_etcd.channel, skip) == _params(grpc_etcd.aio.channel, skip)


def test_the_check_sees_drift() -> None:
    class Sync:
        def method(self, a: int, *, b: str = "x") -> None: ...

    class Aio:
        async def method(self, a: int, *, b: str = "y") -> None: ...

    INTENDED["Drift"] = {}
    try:
        assert _differences("Drift", Sync, Aio) != []
    finally:
        del INTENDED["Drift"]


def test_every_listed_difference_still_exists() -> None:
    """A difference that was fixed must leave the list, or the list stops meaning anything."""
    for label, sync, aio in PAIRS:
        sync_members, aio_members = _members(sync), _members(aio)
        for name in INTENDED[label]:
            assert name in sync_members or name in aio_members, f"{label}.{name}"
            if name in sync_members and name in aio_members:
                assert _params(sync_members[name], {}) != _params(aio_members[name], {}), name
