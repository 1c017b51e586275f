"""The balancer's incremental rebuild (only changed endpoints regrouped) equals a full one."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from policy_helpers import ep

from grpc_etcd.config import parse_config
from grpc_etcd.node import MethodInfo
from grpc_etcd.policies import Balancer, ConnState, Endpoint
from grpc_etcd.policies._balancer import _Group
from grpc_etcd.rules import Selector

STATES = (ConnState.READY, ConnState.CONNECTING, ConnState.TRANSIENT_FAILURE, ConnState.IDLE)
CONFIG = parse_config(
    {
        "routes": [{"to": [{"subset": {"zone": "a"}, "weight": 1}]}],
        "fallback": [{"version": "v2"}, {}],
    }
)


def _shape(groups: dict[Selector, _Group[Any]]) -> dict[Selector, tuple[Any, ...]]:
    """What a group decides: its members, usable sub-channels, waiting, failing, offline."""
    return {
        wanted: (
            frozenset(id(e) for e in group.members),
            frozenset(e.subchannel for e in group.usable.values()),
            group.waiting,
            group.failure is not None,
            group.offline,
        )
        for wanted, group in groups.items()
        if group.members or wanted == ()
    }


def test_incremental_builds_match_full_builds_over_a_random_walk() -> None:
    # 400 steps over 80 nodes (groups above the incremental threshold), seed fixed: every
    # step's groups must equal those of a balancer that builds the same endpoints from scratch.
    rng = random.Random(7)
    pool = {
        f"n{i}": ep(f"n{i}", rng.choice(("v1", "v2")), zone=rng.choice("ab")) for i in range(80)
    }
    present: dict[str, Endpoint[str]] = dict(list(pool.items())[:60])
    balancer = Balancer[str](CONFIG)
    balancer.build(list(present.values()))
    for step in range(400):
        name = rng.choice(list(pool))
        roll = rng.random()
        if roll < 0.3:  # PUT or DELETE
            if present.pop(name, None) is None:
                present[name] = pool[name]
        elif name in present:
            old = present[name]
            if roll < 0.7:
                present[name] = replace(old, state=rng.choice(STATES))
            elif roll < 0.8:
                present[name] = replace(old, serving=not old.serving)
            elif roll < 0.9:
                present[name] = replace(old, ejected=not old.ejected)
            else:  # another record at an address already in use: one shared sub-channel
                other = present[rng.choice(list(present))]
                present[name] = replace(old, subchannel=other.subchannel)
        if rng.random() < 0.05:  # now and then a node marks a method (its own) offline
            key = rng.choice(list(present))
            node = present[key].node
            marked = replace(node, methods={f"M{step}": MethodInfo(online=False)})
            present[key] = replace(present[key], node=marked)
        endpoints = list(present.values())
        balancer.build(endpoints)
        fresh = Balancer[str](CONFIG)
        fresh.build(endpoints)
        assert _shape(balancer._groups) == _shape(fresh._groups)
