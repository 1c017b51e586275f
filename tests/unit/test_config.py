"""The service config document: what validates, what is refused and how the refusal reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpc_etcd.config import (
    POLICY_SETTINGS,
    RingHashSettings,
    ServiceConfig,
    SlowStartSettings,
    config_json_schema,
    config_key,
    format_duration,
    parse_config,
    parse_duration,
    validate_policy_settings,
)
from grpc_etcd.errors import ConfigError, GrpcEtcdError
from grpc_etcd.policies import get_policy

ROUTING_MD = Path("/work/shared/ROUTING.md")
KEY = "/grpc-etcd/config/user"

EXAMPLE: dict[str, Any] = {
    "loadBalancingConfig": [{"p2c_ewma": {}}],
    "routes": [
        {"match": {"source": {"version": "v2"}}, "to": [{"subset": {"version": "v3"}}]},
        {"match": {"headers": {"x-user-tier": "beta"}}, "to": [{"subset": {"version": "v2"}}]},
        {
            "to": [
                {"subset": {"version": "v1"}, "weight": 90},
                {"subset": {"version": "v2"}, "weight": 10},
            ]
        },
    ],
    "fallback": [{"version": "stable"}, {}],
    "healthCheckConfig": {"serviceName": ""},
    "outlierDetection": {
        "interval": "1s",
        "consecutiveErrors": 5,
        "baseEjectionTime": "30s",
        "maxEjectionTime": "300s",
        "maxEjectionPercent": 50,
    },
    "methodConfig": [
        {
            "name": [{"service": "proto.Api"}],
            "timeout": "2s",
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    "locality": {"key": "zone", "mode": "prefer_local", "minClusterSize": 6},
    "panicThreshold": 50,
}


def refusal(document: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, key=KEY)  # type: ignore[arg-type]
    assert isinstance(info.value, GrpcEtcdError) and isinstance(info.value, ValueError)
    assert info.value.key == KEY
    return str(info.value)


def test_the_example_of_routing_md_validates_and_round_trips() -> None:
    config = parse_config(json.dumps(EXAMPLE).encode(), key=KEY)
    assert config.document() == EXAMPLE
    assert config.policy_name == "p2c_ewma"
    assert config.routes[2].to[0].weight == 90
    assert config.outlier_detection is not None
    assert config.outlier_detection.interval == 1.0
    assert config.method_config[0].retry_policy is not None
    assert config.method_config[0].retry_policy.initial_backoff == 0.01


@pytest.mark.skipif(not ROUTING_MD.exists(), reason="the shared spec is not on this machine")
def test_the_spec_document_itself_validates() -> None:
    text = ROUTING_MD.read_text()
    document = re.search(r"```json\n(.*?)```", text, re.S)
    assert document is not None
    assert parse_config(document.group(1)).document() == json.loads(document.group(1))


def test_empty_document_is_the_seed() -> None:
    config = parse_config("{}")
    assert config == ServiceConfig()
    assert config.policy_name == "random" and config.policy_settings == {}
    assert config.routes == () and config.fallback == ()
    assert config.health_check_config is None and config.outlier_detection is None
    assert config.document() == {}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"bogus": 1},
            "bad service config at /grpc-etcd/config/user: unknown key 'bogus' (known: "
            "loadBalancingConfig, routes, fallback, healthCheckConfig, outlierDetection, "
            "methodConfig, retryThrottling, locality, panicThreshold)",
        ),
        ({"load_balancing_config": []}, "unknown key 'load_balancing_config'"),
        ({"outlierDetection": {"consecutiveErors": 5}}, "outlierDetection: unknown key"),
        (
            {"routes": [{"to": [{"weight": 0}]}]},
            "routes[0].to: the weights sum to 0",
        ),
        ({"routes": [{"to": [{"weight": -1}]}]}, "routes[0].to[0].weight: must be >= 0, got -1"),
        (
            {"routes": [{"to": [{"weight": 2**32 - 1}, {"subset": {"version": "v2"}}]}]},
            "routes[0].to: the weights sum to 4294967296, above 4294967295 (xDS weights are 32-bit",
        ),
        (
            {"routes": [{"to": [{"weight": "9"}]}]},
            'routes[0].to[0].weight: must be an integer, got "9"',
        ),
        ({"routes": [{"to": []}]}, "routes[0].to: "),
        ({"routes": [{}]}, "routes[0]: required key 'to' missing"),
        ({"routes": [{"match": {"method": "Api"}, "to": [{}]}]}, "routes[0].match.method"),
        ({"fallback": [{"version": 1}]}, "fallback[0].version: must be a string, got 1"),
        (
            {"loadBalancingConfig": [{"least_request": {"choiceCount": 11}}]},
            "loadBalancingConfig[0]: least_request: choiceCount: must be <= 10, got 11",
        ),
        (
            {"loadBalancingConfig": [{"least_request": {"choiceCount": 1}}]},
            "choiceCount: must be >= 2, got 1",
        ),
        ({"loadBalancingConfig": [{"round_robin": {"x": 1}}]}, "round_robin: unknown key 'x'"),
        (
            {"loadBalancingConfig": [{"ring_hash": {"minRingSize": 5000}}]},
            "loadBalancingConfig[0]: ring_hash: minRingSize (5000) must not exceed "
            "maxRingSize (4096)",
        ),
        (
            {"loadBalancingConfig": [{"ring_hash": {"maxRingSize": 0}}]},
            "ring_hash: maxRingSize: must be >= 1, got 0",
        ),
        (
            {"loadBalancingConfig": [{"grpclb": {}}]},
            "loadBalancingConfig: names no policy we know ('grpclb'); known: random, version",
        ),
        (
            {"loadBalancingConfig": [{"a": {}, "b": {}}]},
            "loadBalancingConfig[0]: each entry must name exactly one policy, like "
            '{"round_robin": {}}, got 2 keys',
        ),
        (
            {"methodConfig": [{"name": [{}], "timeout": "2"}]},
            'methodConfig[0].timeout: a duration must be a string of seconds ending in "s", '
            'like "0.5s", got "2"',
        ),
        ({"methodConfig": [{"name": [{}], "timeout": 2}]}, "timeout: a duration must be"),
        ({"methodConfig": [{"name": [{}], "timeout": "0s"}]}, "timeout: must be > 0, got"),
        ({"methodConfig": [{"name": [{"method": "M"}]}]}, "a method needs its service"),
        (
            {"methodConfig": [{"name": [{"service": "a"}]}, {"name": [{"service": "a"}]}]},
            "methodConfig: entry [1].name[0] names the same methods as entry [0].name[0]",
        ),
        (
            {
                "methodConfig": [
                    {
                        "name": [{}],
                        "retryPolicy": {
                            "maxAttempts": 3,
                            "initialBackoff": "0.1s",
                            "maxBackoff": "1s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE", "UNAVAILABLE_ISH"],
                        },
                    }
                ]
            },
            "methodConfig[0].retryPolicy.retryableStatusCodes[1]: 'UNAVAILABLE_ISH' is not a "
            "gRPC status code name",
        ),
        (
            {"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 1}}]},
            "retryPolicy.maxAttempts: must be >= 2, got 1",
        ),
        ({"retryThrottling": {"maxTokens": 1001, "tokenRatio": 1}}, "retryThrottling.maxTokens"),
        ({"outlierDetection": {"maxEjectionPercent": 101}}, "outlierDetection.maxEjection"),
        ("{", "not valid JSON"),
        ("[]", "the document must be a JSON object, got list"),
    ],
)
def test_refusals_name_the_key_the_place_and_the_fault(document: object, message: str) -> None:
    text = refusal(document)
    assert text.startswith(f"bad service config at {KEY}: ")
    assert message in text, text
    assert "\n" not in text, "one line, for the CLI"


def test_a_refusal_without_key_still_reads() -> None:
    with pytest.raises(ConfigError, match=r"^bad service config: unknown key 'x'"):
        parse_config({"x": 1})


def test_status_codes_by_number_are_named() -> None:
    config = parse_config(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": 9,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 1.5,
                        "retryableStatusCodes": [14, "RESOURCE_EXHAUSTED"],
                    },
                }
            ]
        }
    )
    policy = config.method_config[0].retry_policy
    assert policy is not None
    assert policy.retryable_status_codes == ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
    assert policy.attempts == 5, "gRPC treats maxAttempts above 5 as 5"


def test_first_known_policy_wins_and_its_settings_come_along() -> None:
    config = parse_config(
        {"loadBalancingConfig": [{"grpclb": {"x": 1}}, {"least_request": {"choiceCount": 3}}]}
    )
    assert config.policy_name == "least_request"
    assert config.policy_settings == {"choiceCount": 3}


def test_merged_takes_each_key_the_later_source_sets() -> None:
    code = parse_config({"loadBalancingConfig": [{"round_robin": {}}], "fallback": [{}]})
    etcd = parse_config({"routes": [{"to": [{"subset": {"version": "v2"}}]}], "fallback": []})
    merged = code.merged(etcd)
    assert merged.policy_name == "round_robin", "etcd did not set it: the code's stays"
    assert merged.fallback == (), "etcd set it (to nothing): etcd's wins"
    assert merged.routes == etcd.routes
    assert code.merged(None) is code
    assert code.merged(ServiceConfig()) is code
    assert merged.document() == {
        "loadBalancingConfig": [{"round_robin": {}}],
        "routes": [{"to": [{"subset": {"version": "v2"}}]}],
        "fallback": [],
    }


def test_config_is_frozen() -> None:
    config = parse_config({})
    with pytest.raises(ValueError, match="frozen"):
        config.routes = ()  # type: ignore[misc]


def test_header_match_keys_are_lower_case_like_grpc_metadata() -> None:
    config = parse_config({"routes": [{"match": {"headers": {"X-Tier": "beta"}}, "to": [{}]}]})
    assert config.routes[0].match.headers == {"x-tier": "beta"}


def test_method_config_lookup_is_grpcs() -> None:
    config = parse_config(
        {
            "methodConfig": [
                {"name": [{}], "timeout": "1s"},
                {"name": [{"service": "p.Api"}], "timeout": "2s"},
                {"name": [{"service": "p.Api", "method": "Get"}], "timeout": "3s"},
            ]
        }
    )

    def timeout(method: str) -> float | None:
        entry = config.method_config_for(method)
        return entry.timeout if entry else None

    assert timeout("/p.Api/Get") == 3.0
    assert timeout("/p.Api/Put") == 2.0
    assert timeout("/q.Other/Get") == 1.0
    assert parse_config({}).method_config_for("/p.Api/Get") is None


def test_durations() -> None:
    assert parse_duration("0.5s") == 0.5
    assert parse_duration("30s") == 30.0
    assert format_duration(0.5) == "0.5s"
    assert format_duration(30.0) == "30s"
    assert format_duration(1e-9) == "0.000000001s"
    for bad in ("1", "1m", "-1s", "1.0000000001s", " 1s", 1.0):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_config_key() -> None:
    assert config_key("a.srv.app") == "/grpc-etcd/config/a.srv.app"
    assert config_key("a.srv.app", "/prod/") == "/prod/grpc-etcd/config/a.srv.app"
    with pytest.raises(ValueError, match="service name"):
        config_key("")


def test_json_schema_lists_every_key_and_policy() -> None:
    schema = config_json_schema()
    json.dumps(schema)  # serialisable as it is printed
    assert schema["title"] == "grpc-etcd service config"
    assert set(schema["properties"]) == set(EXAMPLE)
    assert schema["additionalProperties"] is False
    entry = schema["properties"]["loadBalancingConfig"]["items"]
    assert set(entry["properties"]) == set(POLICY_SETTINGS)
    assert entry["maxProperties"] == 1
    timeout = schema["$defs"]["MethodConfig"]["properties"]["timeout"]
    assert "pattern" in json.dumps(timeout), "durations are strings in the schema"


def test_a_typod_key_is_one_fault_in_our_words_with_what_was_meant() -> None:
    """Issue 13: no pydantic text, no second fault that only follows from the first."""
    document = {"routes": [{"to": [{"subset": {"version": "v1"}, "wieght": 5}]}]}
    assert refusal(document) == (
        f"bad service config at {KEY}: routes[0].to[0]: unknown key 'wieght' - did you mean "
        "'weight'?"
    )
    assert refusal({"rotues": []}).endswith("unknown key 'rotues' - did you mean 'routes'?")
    assert refusal({"load_balancing_config": []}).endswith("did you mean 'loadBalancingConfig'?")
    assert refusal({"fallback": [{"version": 1}], "routes": [{"to": [{"subset": {"v": 2}}]}]}) == (
        f"bad service config at {KEY}: routes[0].to[0].subset.v: must be a string, got 2; "
        "fallback[0].version: must be a string, got 1"
    )


def test_a_typod_policy_name_is_named_with_what_was_meant() -> None:
    typo = {"loadBalancingConfig": [{"round_robbin": {}}]}
    assert "names no policy we know ('round_robbin' - did you mean 'round_robin'?); known: " in (
        refusal(typo)
    )
    with pytest.raises(ConfigError, match="'least_requests' - did you mean 'least_request'"):
        validate_policy_settings("least_requests", {})
    child = {"deterministic_subsetting": {"childPolicy": [{"round_robbin": {}}]}}
    assert (  # a subsetting policy's child said 'names no policy we know', naming neither
        "childPolicy: names no policy we know ('round_robbin' - did you mean 'round_robin'?); "
        "known: random, "
    ) in refusal({"loadBalancingConfig": [child]})


def test_a_typo_in_a_policys_settings_lists_that_policys_settings() -> None:
    typo = {"loadBalancingConfig": [{"least_request": {"choiseCount": 3}}]}
    assert refusal(typo).endswith(
        "loadBalancingConfig[0]: least_request: unknown key 'choiseCount' - did you mean "
        "'choiceCount'?"
    )
    far = {"loadBalancingConfig": [{"ring_hash": {"zzz": 3}}]}
    assert refusal(far).endswith(
        "ring_hash: unknown key 'zzz' (known: minRingSize, maxRingSize, requestHashHeader)"
    )
    assert "routes" not in refusal({"loadBalancingConfig": [{"pick_first": {"zzz": 1}}]})


def test_missing_keys_of_one_object_are_named_together() -> None:
    document = {"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 3}}]}
    assert refusal(document).endswith(
        "methodConfig[0].retryPolicy: required keys 'initialBackoff', 'maxBackoff', "
        "'backoffMultiplier', 'retryableStatusCodes' missing"
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.sampled_from(["", "v1", "1s", "x"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["to", "subset", "weight", "wieght", "match", "version", "name", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from([*EXAMPLE, "rotues", "fallbak"])
#: Phrases of pydantic's own messages: a refusal is in our words, whatever the document.
_LIBRARY_TEXT = re.compile(r"Input should|Field required|should have|Extra inputs|pydantic")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=3))
def test_no_refusal_speaks_the_validation_librarys_words(document: dict[str, Any]) -> None:
    try:
        parse_config(document, key=KEY)
    except ConfigError as exc:
        assert not _LIBRARY_TEXT.search(str(exc)), str(exc)
        assert "\n" not in str(exc)


def test_policy_settings_are_kept_typed_with_defaults_in_one_place() -> None:
    config = parse_config({"loadBalancingConfig": [{"ring_hash": {"requestHashHeader": "x-k"}}]})
    settings = config.policy_config
    assert isinstance(settings, RingHashSettings)
    assert (settings.min_ring_size, settings.max_ring_size) == (1024, 4096)
    assert settings.request_hash_header == "x-k"
    assert config.policy_settings == {"requestHashHeader": "x-k"}, "as written"
    assert config.document() == {
        "loadBalancingConfig": [{"ring_hash": {"requestHashHeader": "x-k"}}]
    }
    assert parse_config(config.document()) == config
    assert parse_config({}).policy_config == SlowStartSettings(), "random's, all defaults"


def test_a_policy_reads_the_configs_settings_without_validating_them_again() -> None:
    config = parse_config({"loadBalancingConfig": [{"least_request": {"choiceCount": 4}}]})
    policy = get_policy(config.policy_name, config.policy_config)
    assert policy.settings is config.policy_config  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="LeastRequestSettings given, RingHashSettings expected"):
        get_policy("ring_hash", config.policy_config)


def test_a_hedging_policy_is_read_and_capped_like_a_retry_policy() -> None:
    hedging = {"maxAttempts": 9, "hedgingDelay": "0.05s", "nonFatalStatusCodes": [14, "INTERNAL"]}
    config = parse_config({"methodConfig": [{"name": [{}], "hedgingPolicy": hedging}]})
    policy = config.method_config[0].hedging_policy
    assert policy is not None and policy.attempts == 5 and policy.hedging_delay == 0.05
    assert policy.non_fatal_status_codes == ("UNAVAILABLE", "INTERNAL")
    assert config.document()["methodConfig"][0]["hedgingPolicy"]["hedgingDelay"] == "0.05s"


@pytest.mark.parametrize(
    ("hedging", "message"),
    [
        (
            {"maxAttempts": 1, "hedgingDelay": "0s"},
            "hedgingPolicy.maxAttempts: must be >= 2, got 1",
        ),
        ({"maxAttempts": 3}, "hedgingPolicy: required key 'hedgingDelay' missing"),
        (
            {"maxAttempts": 3, "hedgingDelay": "0s", "nonFatalStatusCodes": ["NOPE"]},
            "hedgingPolicy.nonFatalStatusCodes[0]: 'NOPE' is not a gRPC status code name",
        ),
    ],
)
def test_a_bad_hedging_policy_is_refused_naming_its_key(hedging: object, message: str) -> None:
    text = refusal({"methodConfig": [{"name": [{}], "hedgingPolicy": hedging}]})
    assert message in text, text


def test_a_method_is_retried_or_hedged_never_both() -> None:
    retry = {
        "maxAttempts": 3,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    both = {
        "name": [{}],
        "retryPolicy": retry,
        "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0s"},
    }
    text = refusal({"methodConfig": [both]})
    assert "methodConfig[0]: has both retryPolicy and hedgingPolicy" in text, text
