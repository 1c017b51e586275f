"""Properties of the balancer over random node sets, states and configs (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import ep

from grpc_etcd.config import parse_config
from grpc_etcd.policies import (
    Balancer,
    ConnState,
    DoneInfo,
    Endpoint,
    NoMatchError,
    NotReadyError,
)
from grpc_etcd.routing import CallInfo
from grpc_etcd.rules import node_labels

VERSIONS = ("v1", "v2", "v3")
STATES = (ConnState.READY, ConnState.CONNECTING, ConnState.TRANSIENT_FAILURE, ConnState.IDLE)

subsets = st.sampled_from([{}, {"version": "v1"}, {"version": "v2"}, {"zone": "a"}])
endpoints = st.lists(
    st.tuples(
        st.sampled_from(VERSIONS),
        st.sampled_from(STATES),
        st.booleans(),  # serving
        st.booleans(),  # ejected
        st.sampled_from(["a", "b"]),  # zone
    ),
    max_size=8,
)
configs = st.fixed_dictionaries(
    {
        "routes": st.lists(
            st.fixed_dictionaries(
                {"to": st.lists(st.fixed_dictionaries({"subset": subsets}), min_size=1, max_size=2)}
            ),
            max_size=2,
        ),
        "fallback": st.lists(subsets, max_size=2),
    }
)


def _usable(endpoint: Endpoint[str]) -> bool:
    return endpoint.usable


@settings(max_examples=300, deadline=None)
@given(
    endpoints,
    configs,
    st.sampled_from([None, *VERSIONS, "v9"]),
    st.sampled_from(["random", "round_robin", "least_request", "ring_hash"]),
)
def test_a_pick_is_always_a_usable_node_of_an_allowed_subset(
    raw: list[tuple[str, ConnState, bool, bool, str]],
    config: dict[str, Any],
    version: str | None,
    policy: str,
) -> None:
    nodes = [
        ep(
            f"n{i}",
            v,
            s,
            serving=serving,
            ejected=ejected,
            zone=zone,
            error="down" if s is ConnState.TRANSIENT_FAILURE else None,
        )
        for i, (v, s, serving, ejected, zone) in enumerate(raw)
    ]
    parsed = parse_config(config)
    picker = Balancer[str](parsed, policy=policy).build(nodes)
    allowed: list[dict[str, str]] = []
    if version:
        allowed.append({"version": version})
    elif parsed.routes:
        allowed += [dict(part.subset) for part in parsed.routes[0].to]
    else:
        allowed.append({})
    allowed += [dict(f) for f in parsed.fallback]
    by_name = {e.subchannel: e for e in nodes}
    try:
        pick = picker.pick(CallInfo("/pkg.Api/Get", version))
    except NoMatchError:
        if not version and parsed.routes and len(parsed.routes[0].to) > 1:
            return  # the split chose one of the subsets; which one is not known here
        # Nothing registered in the call's subset nor in any fallback.
        assert not any(
            all(node_labels(e.node).get(k) == v for k, v in subset.items())
            for e in nodes
            for subset in allowed
        )
        return
    except NotReadyError:
        return  # waiting or failing: a node exists but none may be picked now
    chosen = by_name[pick.subchannel]
    assert _usable(chosen)
    labels = node_labels(chosen.node)
    assert any(all(labels.get(k) == v for k, v in subset.items()) for subset in allowed)
    if pick.done is not None:
        pick.done(DoneInfo("OK", 0.001))
