"""A retry after a failed connection, when the picker offers only the node that failed: with
``prefer_local`` and one node in the caller's zone, every call goes to that node; it dies, and
the call's transparent retry waits for the picker that knows it (the other zone's nodes)
instead of failing on it a second time. Both twins, against real servers."""

from __future__ import annotations

import asyncio

import grpc
from scripted import SERVICE, Lab, Ordered, Request, method
from waiting import async_wait_for, wait_for

import grpc_etcd
import grpc_etcd.aio
from grpc_etcd import Node, Snapshot

#: a is the caller's zone's only node; b and c are the other zone's.
ZONES = {"a": "z1", "b": "z2", "c": "z2"}
CONFIG = {"locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 2}}
SOURCE = {"zone": "z1"}


def _zoned(lab: Lab) -> Snapshot:
    nodes = {}
    for name, server in lab.servers.items():
        key = f"/test/srv/script/{name}"
        metadata = {"zone": ZONES[name]}
        nodes[key] = Node(SERVICE, name, server.address, "v1", metadata=metadata, key=key)
    return Snapshot(SERVICE, nodes, 1)


def _all_ready(channel: grpc_etcd.BalancedChannel | grpc_etcd.aio.BalancedChannel) -> bool:
    states = channel.subchannel_states().values()
    return len(states) == 3 and all(s == grpc.ChannelConnectivity.READY for s in states)


def _check(lab: Lab, policy: Ordered, answer: str) -> None:
    assert answer.startswith("b|"), answer
    done = policy.wait_done()
    attempts = [code for code in done if code != "CANCELLED"]  # (picks given back: CANCELLED)
    assert attempts == ["UNAVAILABLE", "OK"], (policy.picks, done)
    assert lab.journal.nodes() == ["a", "b"]


def test_sync_a_dead_local_node_is_not_retried_when_the_next_picker_has_others(lab: Lab) -> None:
    lab.reset()
    policy = Ordered()
    with grpc_etcd.BalancedChannel(SERVICE, policy=policy, config=CONFIG, source=SOURCE) as ch:
        ch.update(_zoned(lab))
        wait_for(lambda: _all_ready(ch), 10, "three READY nodes")
        unary = method(ch, "unary_unary")
        assert unary(Request(input="x"), timeout=5).output.startswith("a|")  # all stay local
        policy.wait_done()
        policy.reset()
        lab.reset({"a": ("drop",)})  # a's connection drops and it takes no new one: dead
        _check(lab, policy, unary(Request(input="x"), timeout=5).output)


async def test_aio_a_dead_local_node_is_not_retried_when_the_next_picker_has_others(
    lab: Lab,
) -> None:
    lab.reset()
    policy = Ordered()
    async with grpc_etcd.aio.BalancedChannel(
        SERVICE, policy=policy, config=CONFIG, source=SOURCE
    ) as ch:
        ch.update(_zoned(lab))

        async def ready() -> bool:
            return _all_ready(ch)

        await async_wait_for(ready, 10, "three READY nodes")
        unary = method(ch, "unary_unary")
        assert (await unary(Request(input="x"), timeout=5)).output.startswith("a|")
        await asyncio.to_thread(policy.wait_done)
        policy.reset()
        lab.reset({"a": ("drop",)})
        answer = (await unary(Request(input="x"), timeout=5)).output
        await asyncio.to_thread(_check, lab, policy, answer)
