"""Strategies shared by the fuzz tests: JSON a stranger can write, and bytes that are not."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from grpc_etcd.config import POLICY_SETTINGS, ServiceConfig, parse_config
from grpc_etcd.errors import ConfigError

#: where the fuzzed config documents say they were read
KEY = "/grpc-etcd/config/fz.srv.app"

#: every fuzz test: no deadline (the machine may be busy), the example count of the profile
fuzzing = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: text, lone UTF-16 surrogates included (JSON escapes them: "\ud800")
texts = st.text(max_size=12) | st.sampled_from(["\ud800", "a\udfffb", "\ud83d\ude00"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity too: etcd stores whatever bytes it gets)."""
    return json.dumps(value).encode()


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def mutated(document: Any) -> st.SearchStrategy[Any]:
    """``document`` with one leaf or member replaced by any JSON value."""

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(value, dict):
            for key, item in value.items():
                found += paths(item, (*prefix, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                found += paths(item, (*prefix, index))
        return found

    def replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
        if not path:
            return new
        head, rest = path[0], path[1:]
        copy: Any = dict(value) if isinstance(value, dict) else list(value)
        copy[head] = replace(copy[head], rest, new)
        return copy

    return st.tuples(st.sampled_from(paths(document)), json_values).map(
        lambda pair: replace(document, pair[0], pair[1])
    )


# ---------------------------------------------------------------- valid documents, built

labels = st.sampled_from(["version", "zone", "tier"])
values = st.sampled_from(["v1", "v2", "v3", "a", "b", "stable"])
selectors = st.dictionaries(labels, values, max_size=2)
durations = st.sampled_from(["0.01s", "0.1s", "1s", "2.5s", "30s"])
codes = st.sampled_from(["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"])
methods = st.sampled_from(
    [{"service": "proto.Api"}, {"service": "proto.Api", "method": "ApiTest"}, {"service": ""}]
)


def _policy() -> st.SearchStrategy[dict[str, Any]]:
    settings: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "least_request": st.fixed_dictionaries({}, optional={"choiceCount": st.integers(2, 10)}),
        "ring_hash": st.fixed_dictionaries(
            {},
            optional={
                "minRingSize": st.integers(1, 4096),
                "requestHashHeader": st.sampled_from(["x-key", "x-user"]),
            },
        ),
    }
    names = sorted(POLICY_SETTINGS)
    return st.sampled_from(names).flatmap(
        lambda name: settings.get(name, st.just({})).map(lambda s: {name: s})
    )


routes = st.fixed_dictionaries(
    {"to": st.lists(
        st.fixed_dictionaries({"subset": selectors}, optional={"weight": st.integers(1, 100)}),
        min_size=1, max_size=3)},
    optional={"match": st.fixed_dictionaries({}, optional={
        "headers": st.dictionaries(st.sampled_from(["x-tier", "x-user"]), values, max_size=2),
        "source": selectors,
        "method": st.sampled_from(["/proto.Api/ApiTest", "/proto.Api/", "/other.Svc/"]),
    })},
)  # fmt: skip
method_configs = st.fixed_dictionaries(
    {"name": st.lists(methods, min_size=1, max_size=2, unique_by=lambda m: json.dumps(m))},
    optional={
        "timeout": durations,
        "retryPolicy": st.fixed_dictionaries({
            "maxAttempts": st.integers(2, 5), "initialBackoff": durations,
            "maxBackoff": st.just("30s"), "backoffMultiplier": st.sampled_from([1, 1.5, 2]),
            "retryableStatusCodes": st.lists(codes, min_size=1, max_size=2, unique=True),
        }),
    },
)  # fmt: skip
valid_documents = st.fixed_dictionaries(
    {},
    optional={
        "loadBalancingConfig": st.lists(_policy(), min_size=1, max_size=1),
        "routes": st.lists(routes, max_size=3),
        "fallback": st.lists(selectors, max_size=3),
        "healthCheckConfig": st.fixed_dictionaries({"serviceName": st.sampled_from(["", "x"])}),
        "outlierDetection": st.fixed_dictionaries({}, optional={
            "interval": durations, "baseEjectionTime": durations,
            "maxEjectionPercent": st.integers(0, 100), "consecutiveErrors": st.integers(1, 10),
        }),
        "methodConfig": st.lists(method_configs, max_size=2),
        "retryThrottling": st.fixed_dictionaries(
            {"maxTokens": st.integers(1, 1000), "tokenRatio": st.sampled_from([0.1, 0.5, 1])}
        ),
    },
)  # fmt: skip


def valid(document: dict[str, Any]) -> ServiceConfig:
    """The parsed document; the example is discarded when our builder made an invalid one
    (two method configs naming the same method, ...)."""
    try:
        return parse_config(document, key=KEY)
    except ConfigError:
        assume(False)
        raise
