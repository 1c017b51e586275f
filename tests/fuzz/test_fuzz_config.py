"""The service config document, as anyone who may write its key can write it: parsing raises
nothing but ConfigError, and a channel keeps its last good config through any garbage."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from fuzz_strategies import (
    KEY,
    deeply_nested,
    dumps,
    fuzzing,
    json_values,
    mutated,
    valid,
    valid_documents,
)
from hypothesis import given
from hypothesis import strategies as st

from grpc_etcd.config import ServiceConfig, parse_config
from grpc_etcd.errors import ConfigError
from grpc_etcd.registry.config_watch import ConfigTracker

#: the document of docs/routing.md, every key set
FULL = {
    "loadBalancingConfig": [{"p2c_ewma": {}}],
    "routes": [
        {"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]},
        {"match": {"headers": {"x-user-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
        {"to": [{"subset": {"version": "v1"}, "weight": 90},
                {"subset": {"version": "v2"}, "weight": 10}]},
    ],
    "fallback": [{"version": "stable"}, {}],
    "healthCheckConfig": {"serviceName": ""},
    "outlierDetection": {"interval": "1s", "consecutiveErrors": 5, "baseEjectionTime": "30s",
                         "maxEjectionTime": "300s", "maxEjectionPercent": 50},
    "methodConfig": [{"name": [{"service": "proto.Api"}], "timeout": "2s",
                      "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s",
                                      "maxBackoff": "0.1s", "backoffMultiplier": 2,
                                      "retryableStatusCodes": ["UNAVAILABLE"]}}],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}  # fmt: skip

raw_documents = st.one_of(
    st.binary(max_size=64),
    json_values.map(dumps),
    mutated(FULL).map(dumps),
    st.integers(1, 3000).map(deeply_nested),
)

# ---------------------------------------------------------------- properties


@fuzzing
@given(raw_documents)
def test_parse_raises_only_config_error(data: bytes) -> None:
    try:
        config = parse_config(data, key=KEY)
    except ConfigError as exc:
        assert exc.key == KEY and str(exc).startswith(f"bad service config at {KEY}: ")
        assert "\n" not in exc.reason or exc.reason.count("\n") < 10
        return
    assert isinstance(config, ServiceConfig)


@fuzzing
@given(valid_documents)
def test_a_valid_document_round_trips(document: dict[str, Any]) -> None:
    config = valid(document)
    assert parse_config(config.document(), key=KEY) == config
    assert parse_config(json.dumps(document), key=KEY) == config


@fuzzing
@given(st.lists(st.one_of(valid_documents.map(dumps), raw_documents, st.none()), max_size=8))
def test_a_channel_keeps_its_last_good_config(values: list[bytes | None]) -> None:
    tracker = ConfigTracker(KEY)
    expected: ServiceConfig | None = None
    for raw in values:
        tracker.offer(raw)
        if raw is None:
            expected = None  # deleted: back to the code's config
        else:
            with contextlib.suppress(ConfigError):  # refused: the last good one stays
                expected = parse_config(raw, key=KEY)
        assert tracker.current == expected


@pytest.mark.parametrize(
    ("data", "fault"),
    [  # what fuzzing found: each escaped parse_config as another exception
        (deeply_nested(100_000), "nested too deeply"),
        (b'{"routes":' + deeply_nested(5000) + b"}", "nested too deeply"),
        (b'{"retryThrottling":{"maxTokens":10,"tokenRatio":NaN}}', "NaN is not JSON"),
        (b'{"methodConfig":[{"name":[{"service":"a"}],"retryPolicy":{"maxAttempts":3,'
         b'"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":Infinity,'
         b'"retryableStatusCodes":["UNAVAILABLE"]}}]}', "Infinity is not JSON"),
    ],
)  # fmt: skip
def test_regressions(data: bytes, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        parse_config(data, key=KEY)
