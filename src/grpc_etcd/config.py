"""The service config of docs/routing.md: one JSON document per service, validated (pure, no I/O).

Keys and meanings are gRPC's service config (camelCase, durations as ``"0.5s"`` strings); the
models here keep them as snake_case attributes holding plain Python values (durations in float
seconds). Every key is optional and ``{}`` is the seed's behaviour. A document that does not
validate raises :class:`~grpc_etcd.errors.ConfigError` naming its key and where the fault is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from ._strict_json import loads_strict
from ._words import did_you_mean
from .errors import ConfigError
from .naming import RESERVED_PREFIX, _normalize_root, validate_service

__all__ = [
    "DEFAULT_POLICY",
    "POLICY_SETTINGS",
    "STATUS_CODE_NAMES",
    "SUBSETTING_POLICIES",
    "FailurePercentageEjection",
    "HealthCheckConfig",
    "HedgingPolicy",
    "LeastRequestSettings",
    "Locality",
    "MethodConfig",
    "MethodName",
    "NoSettings",
    "OutlierDetection",
    "PolicySettings",
    "RetryPolicy",
    "RetryThrottling",
    "RingHashSettings",
    "Route",
    "RouteMatch",
    "ServiceConfig",
    "SlowStartConfig",
    "SlowStartSettings",
    "SubsettingSettings",
    "SuccessRateEjection",
    "WeightedSubset",
    "config_json_schema",
    "config_key",
    "format_duration",
    "parse_config",
    "parse_duration",
    "validate_policy_settings",
]

#: gRFC A6: larger ``maxAttempts`` values (of a retry or a hedging policy) are treated as 5
#: (``retry`` re-exports it).
MAX_ATTEMPTS = 5

#: The policy of ``{}``: the seed's random pick (``version`` is its alias).
DEFAULT_POLICY = "random"

#: gRPC's status code names, in code order (``STATUS_CODE_NAMES[14] == "UNAVAILABLE"``).
STATUS_CODE_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# google.protobuf.Duration's JSON form, non-negative: "1s", "0.5s", "0.000000001s".
_DURATION = re.compile(r"^\d{1,12}(\.\d{1,9})?s$")
_DURATION_SCHEMA = {"type": "string", "pattern": _DURATION.pattern, "examples": ["0.5s", "30s"]}


def parse_duration(value: object) -> float:
    """Seconds from a duration string as gRPC's service config writes it: ``"0.5s"`` -> 0.5."""
    if not isinstance(value, str) or not _DURATION.match(value):
        raise PydanticCustomError(
            "duration",
            'a duration must be a string of seconds ending in "s", like "0.5s", got {value}',
            {"value": json.dumps(value) if isinstance(value, str | int | float) else repr(value)},
        )
    return float(value[:-1])


def format_duration(seconds: float) -> str:
    """The duration string of ``seconds``: 0.5 -> ``"0.5s"`` (the inverse of parse_duration)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


_Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_SCHEMA),
]
_PositiveDuration = Annotated[_Duration, Field(gt=0)]


def _status_name(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 17:
        return STATUS_CODE_NAMES[value]
    if isinstance(value, str) and value in STATUS_CODE_NAMES:
        return value
    raise PydanticCustomError(
        "status_code",
        "{value} is not a gRPC status code name (one of {known})",
        {"value": repr(value), "known": ", ".join(STATUS_CODE_NAMES)},
    )


_StatusCode = Annotated[
    str,
    BeforeValidator(_status_name),
    WithJsonSchema({"type": "string", "enum": list(STATUS_CODE_NAMES)}),
]

#: A subset selector or a label map: ``{"version": "v1", "zone": "a"}``; ``{}`` keeps every node.
Labels = dict[str, StrictStr]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel)


# ---------------------------------------------------------------- policy settings


class PolicySettings(_Model):
    """The typed settings of one balancing policy (its ``{...}`` in ``loadBalancingConfig``),
    defaults filled in. A config keeps them (:attr:`ServiceConfig.policy_config`) and the
    policy reads them: they are validated once, and their defaults are written only here."""

    @classmethod
    def of(cls, name: str, settings: Mapping[str, Any] | PolicySettings | None) -> Self:
        """``settings`` as this class: taken as they are when already typed, else validated
        (``None`` = ``{}``); ConfigError naming policy ``name`` and the fault."""
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, PolicySettings):
            raise ConfigError(
                "",
                f"settings of policy {name!r}: {type(settings).__name__} given, "
                f"{cls.__name__} expected",
            )
        try:
            return cls.model_validate(dict(settings or {}))
        except ValidationError as exc:
            raise ConfigError("", f"settings of policy {name!r}: {_faults(exc, cls)}") from None


class NoSettings(PolicySettings):
    """Settings of a policy that takes none: only ``{}`` is valid."""


class SlowStartConfig(_Model):
    """Slow start (Envoy's ``slow_start_config``, draft gRFC A100): a node that became READY
    ``t`` seconds ago gets its weight times ``max(minWeightPercent / 100,
    (t / slowStartWindow) ^ (1 / aggression))`` until the window has passed."""

    slow_start_window: _PositiveDuration
    #: 1 warms up linearly; larger values give a new node more traffic sooner (Envoy's).
    aggression: Annotated[float, Field(gt=0)] = 1.0
    #: The least share of its weight a new node gets (Envoy's default: 10 %).
    min_weight_percent: Annotated[float, Field(ge=0, le=100)] = 10.0

    def factor(self, age: float) -> float:
        """The share of its weight a node READY for ``age`` seconds gets (1 once warm)."""
        if age >= self.slow_start_window:
            return 1.0
        ramp: float = (max(age, 0.0) / self.slow_start_window) ** (1 / self.aggression)
        return max(self.min_weight_percent / 100, ramp)


class SlowStartSettings(PolicySettings):
    """Settings of ``random``, ``round_robin`` and ``weighted_round_robin``: slow start only."""

    slow_start_config: SlowStartConfig | None = None


class LeastRequestSettings(SlowStartSettings):
    """``least_request``'s settings (gRPC A48, and slow start)."""

    #: How many random nodes are compared per pick; A48 allows 2..10 and defaults to 2.
    choice_count: Annotated[StrictInt, Field(ge=2, le=10)] = 2


class RingHashSettings(PolicySettings):
    """``ring_hash``'s settings (gRPC A42: ring sizes 1..8M, defaults 1024 and 4096)."""

    min_ring_size: Annotated[StrictInt, Field(ge=1, le=8_388_608)] = 1024
    max_ring_size: Annotated[StrictInt, Field(ge=1, le=8_388_608)] = 4096
    #: The metadata key whose value is the hash key (when the call sets no ``route(hash_key=)``).
    request_hash_header: StrictStr = ""

    @model_validator(mode="after")
    def _sizes_in_order(self) -> RingHashSettings:
        if self.min_ring_size > self.max_ring_size:
            raise PydanticCustomError(
                "ring_sizes",
                "minRingSize ({min}) must not exceed maxRingSize ({max})",
                {"min": self.min_ring_size, "max": self.max_ring_size},
            )
        return self


#: The wrapper policies that keep a subset of each group's nodes for a child policy
#: (docs/scale.md).
SUBSETTING_POLICIES = ("deterministic_subsetting", "random_subsetting")


def _child_policy(entries: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
    checked = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PydanticCustomError(
                "lb_entry",
                "each entry must be an object like {example}",
                {"example": '{"round_robin": {}}'},
            )
        checked.append(_lb_entry(entry))
    known = [name for entry in checked for name in entry if name in POLICY_SETTINGS]
    if not known:
        children = [n for n in POLICY_SETTINGS if n not in SUBSETTING_POLICIES]
        raise PydanticCustomError(
            "lb_unknown",
            "names no policy we know ({names}); known: {known}",
            {
                "names": ", ".join(
                    f"{n!r}{did_you_mean(n, children)}" for entry in checked for n in entry
                ),
                "known": ", ".join(children),
            },
        )
    if known[0] in SUBSETTING_POLICIES:
        raise PydanticCustomError(
            "lb_nested", "{name} cannot be the child of a subsetting policy", {"name": known[0]}
        )
    return tuple(checked)


class SubsettingSettings(PolicySettings):
    """``deterministic_subsetting``'s and ``random_subsetting``'s settings (gRFC A68's)."""

    #: How many nodes of each group a channel keeps connections to (A68's default, 20).
    subset_size: Annotated[StrictInt, Field(ge=1, le=1000)] = 20
    #: The policy that picks among them, as a ``loadBalancingConfig`` list (the first entry
    #: we know wins, its settings typed); ``round_robin`` when not given.
    child_policy: Annotated[
        tuple[Any, ...],
        Field(min_length=1),
        AfterValidator(_child_policy),
        WithJsonSchema({"type": "array", "minItems": 1, "items": {"type": "object"}}),
    ] = ({"round_robin": SlowStartSettings()},)

    @property
    def child(self) -> tuple[str, PolicySettings]:
        """The child policy's name and typed settings: the first entry of ``childPolicy`` we
        know."""
        for entry in self.child_policy:
            for name, settings in entry.items():
                if name in POLICY_SETTINGS:
                    return name, settings
        raise AssertionError("validated: childPolicy names a known policy")


#: Every policy name we know, with the model of its settings.
POLICY_SETTINGS: Mapping[str, type[PolicySettings]] = {
    "random": SlowStartSettings,
    "version": SlowStartSettings,
    "pick_first": NoSettings,
    "round_robin": SlowStartSettings,
    "weighted_round_robin": SlowStartSettings,
    "least_request": LeastRequestSettings,
    "p2c_ewma": NoSettings,
    "ring_hash": RingHashSettings,
    "deterministic_subsetting": SubsettingSettings,
    "random_subsetting": SubsettingSettings,
}


def _lb_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``loadBalancingConfig`` entry, its settings typed when the policy is ours."""
    if len(entry) != 1:
        raise PydanticCustomError(
            "lb_entry",
            "each entry must name exactly one policy, like {example}, got {n} keys",
            {"n": len(entry), "example": '{"round_robin": {}}'},
        )
    ((name, settings),) = entry.items()
    model = POLICY_SETTINGS.get(name)
    if model is None:
        return entry  # gRPC's rule: entries we don't know are skipped, the first known one wins
    if isinstance(settings, model):
        return entry
    if not isinstance(settings, Mapping):
        raise PydanticCustomError(
            "lb_settings", "{name}: settings must be an object", {"name": name}
        )
    try:
        return {name: model.model_validate(settings)}
    except ValidationError as exc:
        raise PydanticCustomError(
            "lb_settings", "{name}: {fault}", {"name": name, "fault": _faults(exc, model)}
        ) from None


def validate_policy_settings(
    name: str, settings: Mapping[str, Any] | PolicySettings | None
) -> PolicySettings:
    """The typed settings of policy ``name`` (``None`` = ``{}``); ConfigError if invalid."""
    model = POLICY_SETTINGS.get(name)
    if model is None:
        hint = did_you_mean(name, POLICY_SETTINGS)
        raise ConfigError(
            "", f"unknown balancing policy {name!r}{hint}; known: {', '.join(POLICY_SETTINGS)}"
        )
    return model.of(name, settings)


def _inlined(schema: Any, defs: Mapping[str, Any] | None = None) -> Any:
    """``schema`` with its ``$ref``s to its own ``$defs`` replaced by what they name, so it
    can stand inside another schema (a policy's settings nest models: slowStartConfig)."""
    if defs is None:
        defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    return schema


_LB_ENTRY_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        name: _inlined(model.model_json_schema(by_alias=True))
        for name, model in POLICY_SETTINGS.items()
    },
}
_LbEntry = Annotated[dict[str, Any], AfterValidator(_lb_entry), WithJsonSchema(_LB_ENTRY_SCHEMA)]


def _lowercase_keys(value: dict[str, str]) -> dict[str, str]:
    return {key.lower(): item for key, item in value.items()}


# ---------------------------------------------------------------- routes


class RouteMatch(_Model):
    """What a route tests; every part it names must hold (an empty match always holds)."""

    #: Labels of the calling channel (``registry.channel(..., source={...})``).
    source: Labels = Field(default_factory=dict)
    #: Exact values of the call's metadata (keys are lower-cased, as gRPC sends them).
    headers: Annotated[Labels, AfterValidator(_lowercase_keys)] = Field(default_factory=dict)
    #: Values set with ``route(...)`` around the call.
    route: Labels = Field(default_factory=dict)
    #: A full method name ``/pkg.Service/Method`` or a service prefix ``/pkg.Service/``.
    method: Annotated[StrictStr, Field(pattern=r"^/[^/]+/[^/]*$")] | None = None


#: The most a route's weights may sum to: xDS sends them as uint32, and gRPC's xDS clients
#: refuse a weighted cluster whose total is above it.
_MAX_TOTAL_WEIGHT = 2**32 - 1


class WeightedSubset(_Model):
    """One destination of a route: a subset selector and its integer share of the calls."""

    subset: Labels = Field(default_factory=dict)
    weight: Annotated[StrictInt, Field(ge=0)] = 1


class Route(_Model):
    """The first route whose ``match`` holds sends the call to one of its ``to`` subsets."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    to: Annotated[tuple[WeightedSubset, ...], Field(min_length=1)]

    @field_validator("to")
    @classmethod
    def _some_weight(cls, to: tuple[WeightedSubset, ...]) -> tuple[WeightedSubset, ...]:
        total = sum(part.weight for part in to)
        if not total:
            raise PydanticCustomError("weights", "the weights sum to 0: no call could go anywhere")
        if total > _MAX_TOTAL_WEIGHT:
            raise PydanticCustomError(
                "weights",
                "the weights sum to {total}, above {most} (xDS weights are 32-bit: "
                "gRPC clients refuse more)",
                {"total": total, "most": _MAX_TOTAL_WEIGHT},
            )
        return to


# ---------------------------------------------------------------- resilience


class HealthCheckConfig(_Model):
    """Watch ``grpc.health.v1.Health/Watch`` for this service name on each sub-channel."""

    service_name: StrictStr = ""


class SuccessRateEjection(_Model):
    """gRPC A50's success-rate ejection (defaults are A50's)."""

    stdev_factor: Annotated[StrictInt, Field(ge=0)] = 1900
    enforcement_percentage: Annotated[StrictInt, Field(ge=0, le=100)] = 100
    minimum_hosts: Annotated[StrictInt, Field(ge=0)] = 5
    request_volume: Annotated[StrictInt, Field(ge=0)] = 100


class FailurePercentageEjection(_Model):
    """gRPC A50's failure-percentage ejection (defaults are A50's)."""

    threshold: Annotated[StrictInt, Field(ge=0, le=100)] = 85
    enforcement_percentage: Annotated[StrictInt, Field(ge=0, le=100)] = 100
    minimum_hosts: Annotated[StrictInt, Field(ge=0)] = 5
    request_volume: Annotated[StrictInt, Field(ge=0)] = 50


class OutlierDetection(_Model):
    """Passive ejection from call outcomes (gRPC A50's keys and defaults, plus Envoy's
    ``consecutiveErrors``). An algorithm whose key is absent is off, as in A50."""

    interval: _PositiveDuration = 10.0
    base_ejection_time: _PositiveDuration = 30.0
    max_ejection_time: _PositiveDuration = 300.0
    max_ejection_percent: Annotated[StrictInt, Field(ge=0, le=100)] = 10
    #: Envoy's ``consecutive_5xx`` idea: eject after this many failed calls in a row.
    consecutive_errors: Annotated[StrictInt, Field(ge=1)] | None = None
    success_rate_ejection: SuccessRateEjection | None = None
    failure_percentage_ejection: FailurePercentageEjection | None = None


class MethodName(_Model):
    """Which methods a methodConfig entry covers: a service, one method, or (``{}``) all."""

    service: StrictStr = ""
    method: StrictStr = ""

    @model_validator(mode="after")
    def _method_needs_service(self) -> MethodName:
        if self.method and not self.service:
            raise PydanticCustomError("method_name", "a method needs its service")
        return self


class RetryPolicy(_Model):
    """gRPC's retry policy; ``maxAttempts`` above 5 is treated as 5, as gRPC does."""

    max_attempts: Annotated[StrictInt, Field(ge=2)]
    initial_backoff: _PositiveDuration
    max_backoff: _PositiveDuration
    backoff_multiplier: Annotated[float, Field(gt=0)]
    retryable_status_codes: Annotated[tuple[_StatusCode, ...], Field(min_length=1)]

    @property
    def attempts(self) -> int:
        """The number of attempts in force: ``maxAttempts`` capped at gRPC's 5."""
        return min(self.max_attempts, MAX_ATTEMPTS)


class HedgingPolicy(_Model):
    """gRPC's hedging policy (gRFC A6): the call goes to one node, and while no answer has come
    another attempt starts every ``hedgingDelay`` on a node the call has not tried, up to
    ``maxAttempts`` (above 5 treated as 5, as gRPC does). A status in ``nonFatalStatusCodes``
    lets the other attempts go on (and starts the next one at once); any other status, or the
    first response, ends the call and cancels the rest."""

    max_attempts: Annotated[StrictInt, Field(ge=2)]
    #: Required, as in grpc-java: an omitted delay would silently send every attempt at once.
    hedging_delay: _Duration
    non_fatal_status_codes: tuple[_StatusCode, ...] = ()

    @property
    def attempts(self) -> int:
        """The number of attempts in force: ``maxAttempts`` capped at gRPC's 5."""
        return min(self.max_attempts, MAX_ATTEMPTS)


class MethodConfig(_Model):
    """Per-method defaults: a timeout, and a retry or a hedging policy (never both)."""

    name: Annotated[tuple[MethodName, ...], Field(min_length=1)]
    timeout: _PositiveDuration | None = None
    retry_policy: RetryPolicy | None = None
    hedging_policy: HedgingPolicy | None = None

    @model_validator(mode="after")
    def _retry_or_hedging(self) -> MethodConfig:
        if self.retry_policy is not None and self.hedging_policy is not None:
            raise PydanticCustomError(
                "retry_and_hedging",
                "has both retryPolicy and hedgingPolicy; a method is retried or hedged, not both",
            )
        return self


class RetryThrottling(_Model):
    """gRPC's retry throttling: a token bucket shared by the channel's calls."""

    max_tokens: Annotated[StrictInt, Field(gt=0, le=1000)]
    token_ratio: Annotated[float, Field(gt=0)]


# ---------------------------------------------------------------- the document


# ---------------------------------------------------------------- large fleets


class Locality(_Model):
    """Locality-aware routing: a node's locality is its label ``key``, the caller's its source
    label of the same name (else ``$GRPC_ETCD_ZONE``). ``prefer_local`` keeps calls in the
    caller's locality while enough of its nodes are usable (Envoy's overprovisioning factor
    1.4); ``zone_aware`` sends as much as possible locally while every node gets an even share,
    from how the calling channels are spread (Envoy's zone-aware routing). Groups of fewer
    than ``minClusterSize`` registered nodes ignore it."""

    key: Annotated[StrictStr, Field(min_length=1)] = "zone"
    mode: Literal["prefer_local", "zone_aware"]
    #: Envoy's ``min_cluster_size`` and its default.
    min_cluster_size: Annotated[StrictInt, Field(ge=1)] = 6


class ServiceConfig(_Model):
    """One service's routing document (docs/routing.md); ``ServiceConfig()`` is the seed's."""

    load_balancing_config: tuple[_LbEntry, ...] = ()
    routes: tuple[Route, ...] = ()
    fallback: tuple[Labels, ...] = ()
    health_check_config: HealthCheckConfig | None = None
    outlier_detection: OutlierDetection | None = None
    method_config: tuple[MethodConfig, ...] = ()
    retry_throttling: RetryThrottling | None = None
    locality: Locality | None = None
    #: Envoy's ``healthy_panic_threshold``, in percent (0: off): below this share of a group's
    #: registered nodes usable, the policy picks among all of its READY nodes.
    panic_threshold: Annotated[float, Field(ge=0, le=100, strict=True)] = 0.0

    @field_validator("load_balancing_config")
    @classmethod
    def _one_known(cls, entries: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        if entries and not any(name in POLICY_SETTINGS for entry in entries for name in entry):
            raise PydanticCustomError(
                "lb_unknown",
                "names no policy we know ({names}); known: {known}",
                {
                    "names": ", ".join(
                        f"{n!r}{did_you_mean(n, POLICY_SETTINGS)}"
                        for entry in entries
                        for n in entry
                    ),
                    "known": ", ".join(POLICY_SETTINGS),
                },
            )
        return entries

    @field_validator("method_config")
    @classmethod
    def _names_once(cls, entries: tuple[MethodConfig, ...]) -> tuple[MethodConfig, ...]:
        seen: dict[tuple[str, str], str] = {}
        for i, entry in enumerate(entries):
            for j, name in enumerate(entry.name):
                where = f"entry [{i}].name[{j}]"
                first = seen.setdefault((name.service, name.method), where)
                if first != where:
                    raise PydanticCustomError(
                        "duplicate_name",
                        "{where} names the same methods as {first}",
                        {"where": where, "first": first},
                    )
        return entries

    def _policy(self) -> tuple[str, PolicySettings]:
        """The first entry of ``loadBalancingConfig`` that we know (gRPC's rule), or the default."""
        for entry in self.load_balancing_config:
            for name, settings in entry.items():
                if name in POLICY_SETTINGS:
                    return name, settings
        return DEFAULT_POLICY, POLICY_SETTINGS[DEFAULT_POLICY]()

    @property
    def policy_name(self) -> str:
        """The first policy of ``loadBalancingConfig`` that we know; ``random`` when none is set."""
        return self._policy()[0]

    @property
    def policy_config(self) -> PolicySettings:
        """That policy's typed settings, defaults filled in (``RingHashSettings``, ...)."""
        return self._policy()[1]

    @property
    def policy_settings(self) -> Mapping[str, Any]:
        """That policy's settings as written (camelCase keys, validated); ``{}`` when none."""
        return self.policy_config.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def method_config_for(self, method: str) -> MethodConfig | None:
        """The methodConfig entry of a full method name ``/pkg.Service/Method``, as gRPC
        chooses it: the one naming the method, else its service, else the ``{}`` default."""
        service, _, name = method.lstrip("/").partition("/")
        best: tuple[int, MethodConfig] | None = None
        for entry in self.method_config:
            for item in entry.name:
                if item.service == service and item.method == name:
                    return entry
                rank = 1 if item.service == service and not item.method else 0
                if (rank or not item.service) and (best is None or rank > best[0]):
                    best = (rank, entry)
        return best[1] if best else None

    def merged(self, other: ServiceConfig | None) -> ServiceConfig:
        """This config with every top-level key that ``other`` sets taken from ``other``."""
        if other is None or not other.model_fields_set:
            return self
        return self.model_copy(
            update={name: getattr(other, name) for name in other.model_fields_set}
        )

    def document(self) -> dict[str, Any]:
        """The JSON document of the keys that were set (camelCase, durations as strings)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _where(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model that validates the object at ``loc`` inside ``model`` (aliases in ``loc``)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue  # an item of a tuple: the same model as the tuple's
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        field = fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``Model``, ``Model | None``, ``tuple[Model, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _shown(value: object) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: pydantic's error types, in our words (``{got}``: the value found, as JSON).
_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string, got {got}",
    "int_type": "must be an integer, got {got}",
    "int_parsing": "must be an integer, got {got}",
    "int_from_float": "must be an integer, got {got}",
    "float_type": "must be a number, got {got}",
    "float_parsing": "must be a number, got {got}",
    "bool_type": "must be true or false, got {got}",
    "dict_type": "must be an object, got {got}",
    "model_type": "must be an object, got {got}",
    "model_attributes_type": "must be an object, got {got}",
    "tuple_type": "must be a list, got {got}",
    "list_type": "must be a list, got {got}",
    "greater_than": "must be > {gt}, got {got}",
    "greater_than_equal": "must be >= {ge}, got {got}",
    "less_than": "must be < {lt}, got {got}",
    "less_than_equal": "must be <= {le}, got {got}",
    "too_short": "must have at least {min_length} item(s), got {actual_length}",
    "too_long": "must have at most {max_length} item(s), got {actual_length}",
}
#: Keys whose pattern says nothing to a reader, in words.
_PATTERNS = {"method": "must be a full method name /pkg.Service/Method or a prefix /pkg.Service/"}


def _fault(error: Any, loc: list[int | str], model: type[BaseModel]) -> str:
    """One pydantic error in our words (its location is said by the caller)."""
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1]) if loc else "?"
        owner = _model_at(model, loc[:-1])
        known = _keys_of(owner) if owner is not None else []
        if not known:
            takes = "settings" if owner in POLICY_SETTINGS.values() else "keys"
            return f"unknown key {unknown!r} (it takes no {takes})"
        hint = did_you_mean(unknown, known)
        return f"unknown key {unknown!r}" + (hint or f" (known: {', '.join(known)})")
    if kind == "string_pattern_mismatch" and loc and loc[-1] in _PATTERNS:
        return f"{_PATTERNS[str(loc[-1])]}, got {_shown(error['input'])}"
    template = _MESSAGES.get(kind)
    if template is None:  # ours (PydanticCustomError) are in our words; pydantic's rarer ones:
        message = str(error["msg"])
        if message.startswith("Input should be "):
            message = f"must be {message[16:]}, got {_shown(error['input'])}"
        return message
    text = template.format(got=_shown(error["input"]), **(error.get("ctx") or {}))
    return text.replace(" 1 item(s)", " 1 item").replace("item(s)", "items")


def _faults(exc: ValidationError, model: type[BaseModel] | None = None, limit: int = 3) -> str:
    """One line for a pydantic error in our words: ``routes[0].to[1].weight: <fault>``.

    ``model`` is the model that raised (the document's by default), whose keys an unknown key
    is compared with. A fault that only follows from another (a list left too short because
    its one item was refused) is not repeated, and required keys missing from one object are
    named together.
    """
    model = model or ServiceConfig
    errors = [
        (error, [part for part in error["loc"] if not _is_tag(part)])
        for error in exc.errors(include_url=False)
    ]
    locs = [tuple(loc) for _, loc in errors]
    faults: list[str] = []
    missing: dict[str, list[str]] = {}
    for error, loc in errors:
        if any(len(other) > len(loc) and other[: len(loc)] == tuple(loc) for other in locs):
            continue  # a parent's fault caused by its child's
        if error["type"] == "missing" and loc:
            where = _where(loc[:-1])
            if where not in missing:
                missing[where] = []
                faults.append(where)  # a placeholder, filled in below
            missing[where].append(repr(str(loc[-1])))
            continue
        where = _where(loc[:-1] if error["type"] == "extra_forbidden" else loc)
        message = _fault(error, loc, model)
        faults.append(f"{where}: {message}" if where else message)
    for where, keys in missing.items():
        text = f"{'required key' if len(keys) == 1 else 'required keys'} {', '.join(keys)} missing"
        faults[faults.index(where)] = f"{where}: {text}" if where else text
    extra = len(faults) - limit
    return "; ".join(faults[:limit]) + (f" (and {extra} more)" if extra > 0 else "")


def _is_tag(part: int | str) -> bool:
    # pydantic adds the validator's name for Annotated/union members ("function-after[...]").
    return isinstance(part, str) and ("[" in part and part.endswith("]"))


def parse_config(
    data: bytes | str | Mapping[str, Any] | ServiceConfig, *, key: str = ""
) -> ServiceConfig:
    """Validate a document (JSON text or an already-decoded mapping) into a ServiceConfig.

    ``key`` is where it was read (an etcd key, a file name) and is named in the
    :class:`~grpc_etcd.errors.ConfigError` raised for a document that does not validate.
    """
    if isinstance(data, ServiceConfig):
        return data
    if isinstance(data, bytes | str):
        try:
            data = loads_strict(data)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"the document must be a JSON object, got {type(data).__name__}")
    try:
        return ServiceConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(key, _faults(exc)) from None


def config_key(service: str, root: str = "") -> str:
    """The etcd key of a service's config: ``<root>/grpc-etcd/config/<service>``."""
    validate_service(service)
    return f"{_normalize_root(root)}{RESERVED_PREFIX}config/{service}"


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the document, for editors (``grpc-etcd config schema``)."""
    schema = ServiceConfig.model_json_schema(by_alias=True)
    schema["title"] = "grpc-etcd service config"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
