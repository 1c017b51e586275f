"""policies/_picks.py: a sub-channel's Pick made once and reused by every rebuild."""

from __future__ import annotations

from policy_helpers import node, ready

from grpc_etcd.policies import _picks
from grpc_etcd.policies._picks import PickCache
from grpc_etcd.policies.base import Endpoint


def test_a_rebuild_reuses_the_picks_of_the_sub_channels_it_still_has() -> None:
    cache = PickCache()
    endpoints = ready("a", "b", "c")
    first = cache.picks(endpoints)
    assert [p.subchannel for p in first] == ["a", "b", "c"]
    assert all(p.done is None for p in first)
    again = cache.picks(endpoints[::-1])
    assert [p.subchannel for p in again] == ["c", "b", "a"], "in the order asked"
    assert all(a is b for a, b in zip(again, first[::-1], strict=True)), "the same objects"


def test_the_cache_is_cut_back_to_the_last_build_past_its_spare_entries() -> None:
    cache = PickCache()
    endpoints = [Endpoint(node("a"), object()) for _ in range(2 * 1 + _picks._SPARE + 1)]
    cache.picks(endpoints)
    kept = cache.picks(endpoints[-1:])
    assert len(cache._picks) == 1, "past 2 x 1 + spare: only the last build's pick stays"
    assert cache.picks(endpoints[-1:])[0] is kept[0]
    cache.picks(endpoints[:3])
    assert len(cache._picks) == 4, "within the spare: nothing is dropped"
