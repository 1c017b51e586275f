"""One service's etcd state and service config -> xDS v3 resources (pure, no I/O).

The mapping of the service config (docs/routing.md) onto what gRPC's xDS clients (grpcio,
grpc-go, grpc-java, grpc-js) understand:

* Listener ``<service>``: an API listener whose HTTP connection manager takes its routes from
  RDS over ADS and has the router filter (clients refuse a listener without it).
* RouteConfiguration ``<service>``, first match wins, in docs/routing.md's order: one route per
  registered version matching ``x-version`` exactly (pinned calls skip the route table), then
  any other ``x-version`` (unknown: the fallback, else a cluster that drops every call), then the
  route table (``headers`` and ``method`` become matchers; ``source`` is decided here, against
  the caller's labels from its bootstrap; weights become weighted clusters), then every node.
* Clusters ``<service>|<subset>``: EDS over ADS; the policy and outlier detection.
* ClusterLoadAssignment per cluster: the subset's nodes, each locality weighted (a locality
  without a weight is ACKed by grpcio and then drops every call). A subset with no node and no
  fallback gets a drop overload at 100% whose category names the service and the versions it
  knows: that is the UNAVAILABLE message clients see.

Fallbacks are computed from what is registered: a route to an empty subset goes to the first
fallback subset that has nodes. (Our BalancedChannel also falls back when every node of a subset
is unusable; xDS clients fall back only when it is empty.)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import (
    MethodConfig,
    MethodName,
    OutlierDetection,
    RetryPolicy,
    RingHashSettings,
    ServiceConfig,
    SubsettingSettings,
)
from ..node import Node, parse_address
from ..policies._fleet import zone_aware_shares
from ..rules import method_is_offline, node_labels, offline_methods, selector, selects
from ..snapshot import Snapshot
from . import _protos as pb
from .names import cluster_name, parse_cluster_name

__all__ = [
    "CDS",
    "EDS",
    "LDS",
    "RDS",
    "TYPE_URLS",
    "VERSION_HEADER",
    "ServiceState",
    "Translation",
]

_PREFIX = "type.googleapis.com/"
LDS = _PREFIX + "envoy.config.listener.v3.Listener"
RDS = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CDS = _PREFIX + "envoy.config.cluster.v3.Cluster"
EDS = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
#: The four resource types, in the order a client needs them.
TYPE_URLS = (LDS, RDS, CDS, EDS)

#: The metadata key of a pinned version (docs/routing.md, step 2).
VERSION_HEADER = "x-version"
_ROUTER_FILTER = "envoy.filters.http.router"
#: Policies that honour node weights: their nodes get one locality each, weighted.
_WEIGHTED_POLICIES = frozenset({"random", "version", "weighted_round_robin"})
#: Policies gRPC's xDS clients do not have (grpcio NACKs them): sent as round_robin.
_AS_ROUND_ROBIN = frozenset(
    {"random", "version", "weighted_round_robin", "least_request", "p2c_ewma"}
)
#: Locality weights are shares of this (uint32; grpc adds them up).
_WEIGHT_SCALE = 1_000_000
#: The retryable codes gRPC honours in an xDS retry policy (gRFC A44).
_XDS_RETRY_CODES = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
)


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return selects(selector(wanted), labels)


@dataclass(frozen=True)
class ServiceState:
    """What the control plane knows of one service: its usable nodes and its config."""

    service: str
    nodes: tuple[Node, ...] = ()
    config: ServiceConfig = field(default_factory=ServiceConfig)
    #: One line per node left out because its address is not ``host:port``.
    skipped: tuple[str, ...] = ()
    #: How many connected clients (ADS streams asking for this service) are in each locality
    #: (their ``node.locality.zone``, or their source label of the locality key): zone_aware.
    callers: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        snapshot: Snapshot,
        config: ServiceConfig | None = None,
        callers: Mapping[str, int] | None = None,
    ) -> ServiceState:
        """The state of a snapshot; nodes of weight 0 are drained (get no calls) and left out,
        as are nodes whose address cannot be dialled or is another node's (the first key wins).
        ``callers``: the connected clients per locality (zone_aware)."""
        nodes: list[Node] = []
        skipped: list[str] = []
        addresses: dict[str, str] = {}
        for node in sorted(snapshot, key=lambda n: n.key or n.id):
            name = node.key or node.id
            try:
                parse_address(node.address)
            except ValueError as exc:
                skipped.append(f"skipping {name}: {exc}")
                continue
            if node.address in addresses:  # grpc-go refuses an EDS with an address twice
                skipped.append(f"skipping {name}: {node.address} is {addresses[node.address]}'s")
                continue
            addresses[node.address] = name
            if node.weight != 0:
                nodes.append(node)
        config = config or ServiceConfig()
        return cls(snapshot.service, tuple(nodes), config, tuple(skipped), dict(callers or {}))

    def offline(self) -> list[str]:
        """Every method some node marks offline: full names first, then last parts."""
        names = {name for node in self.nodes for name in offline_methods(node)}
        return sorted(names, key=lambda name: (not name.startswith("/"), name))

    def versions(self) -> list[str]:
        """The registered versions, sorted (a node without one has none)."""
        return sorted({node.version for node in self.nodes if node.version})


#: How many answers (resource name and kind of caller) and subsets one translation keeps.
#: Names come from clients: past this, answers to made-up names are computed, not kept, so a
#: client asking for endless names cannot grow the control plane's memory.
CACHE_LIMIT = 4096


class Translation:
    """The xDS resources of one :class:`ServiceState`; build one per state, ask it by name.

    ``warnings`` lists what of the config cannot be said in xDS (and what was done instead).
    """

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.service = state.service
        config = state.config
        self.warnings: list[str] = list(state.skipped)
        self._serialized: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes | None] = {}
        self._selected: dict[tuple[tuple[tuple[str, str], ...], str], tuple[Node, ...]] = {}
        self._labelled = [(node, node_labels(node), offline_methods(node)) for node in state.nodes]
        self._by_version: dict[str, list[tuple[Node, dict[str, str], frozenset[str]]]] = {}
        for labelled in self._labelled:
            self._by_version.setdefault(labelled[1]["version"], []).append(labelled)
        policy, settings = config.policy_name, config.policy_config
        if isinstance(settings, SubsettingSettings):
            policy, settings = settings.child
            self.warnings.append(
                f"{self.service}: {config.policy_name} is not in gRPC's xDS clients (grpcio "
                f"has no subsetting); serving its childPolicy {policy!r} over every node"
            )
        self._weighted = policy in _WEIGHTED_POLICIES
        if policy in _AS_ROUND_ROBIN:
            if config.load_balancing_config:
                self.warnings.append(
                    f"{self.service}: policy {policy!r} has no xDS equivalent in gRPC clients; "
                    "sent as round_robin"
                    + (" with node weights as locality weights" if self._weighted else "")
                )
            policy = "round_robin"
        self.policy = policy
        self._ring = settings if isinstance(settings, RingHashSettings) else RingHashSettings()
        if config.outlier_detection and config.outlier_detection.consecutive_errors is not None:
            self.warnings.append(
                f"{self.service}: outlierDetection.consecutiveErrors has no equivalent in gRPC's "
                "xDS clients (gRFC A50); ignored"
            )
        if config.panic_threshold:
            self.warnings.append(
                f"{self.service}: panicThreshold has no equivalent in gRPC's xDS clients (they "
                "ignore healthy_panic_threshold and never send calls to unhealthy endpoints); "
                "ignored"
            )
        if getattr(settings, "slow_start_config", None) is not None:
            self.warnings.append(
                f"{self.service}: slowStartConfig has no equivalent in gRPC's xDS clients (no "
                "slow start: draft gRFC A100); ignored"
            )
        if config.locality is not None and config.locality.mode == "prefer_local":
            self.warnings.append(
                f"{self.service}: locality prefer_local is sent as EDS priorities (the caller's "
                "zone first): gRPC clients move to the other zones only once every node of "
                "theirs fails, not in proportion below 72 % usable"
            )
        for route in config.routes:
            if route.match.route:
                self.warnings.append(
                    f"{self.service}: a route matching route() values {dict(route.match.route)} "
                    "never holds for an xDS client; left out"
                )
        if config.retry_throttling is not None:
            self.warnings.append(
                f"{self.service}: retryThrottling has no equivalent in gRPC's xDS clients (they "
                "do not throttle xDS retries); ignored"
            )
        if any(entry.hedging_policy is not None for entry in config.method_config):
            self.warnings.append(
                f"{self.service}: hedgingPolicy has no equivalent in gRPC's xDS clients (they "
                "ignore a route's hedge_policy); left out"
            )
        for entry in config.method_config:
            if entry.retry_policy:
                dropped = set(entry.retry_policy.retryable_status_codes) - _XDS_RETRY_CODES
                if dropped:
                    self.warnings.append(
                        f"{self.service}: gRPC's xDS retry policy cannot retry "
                        f"{', '.join(sorted(dropped))}; left out"
                    )

    # ------------------------------------------------------------ lookup by name

    def serialized(self, type_url: str, name: str, source: Mapping[str, str]) -> bytes | None:
        """:meth:`resource` serialized (deterministically), computed once per caller labels:
        every stream of the same kind of caller shares it."""
        if type_url == RDS:
            key = (type_url, name, tuple(sorted(source.items())))
        elif type_url == EDS and self.state.config.locality is not None:
            key = (type_url, name, (("", self._zone_of(source)),))
        else:
            key = (type_url, name, ())
        if key in self._serialized:
            return self._serialized[key]
        resource = self.resource(type_url, name, source)
        answer = None if resource is None else resource.SerializeToString(deterministic=True)
        if len(self._serialized) < CACHE_LIMIT:
            self._serialized[key] = answer
        return answer

    def resource(self, type_url: str, name: str, source: Mapping[str, str]) -> Any | None:
        """The resource ``name`` of ``type_url`` for a caller with labels ``source``, or None
        when the name is not one of this service's."""
        try:
            if type_url == LDS:
                return self.listener() if name == self.service else None
            if type_url == RDS:
                return self.route_configuration(source) if name == self.service else None
            if type_url in (CDS, EDS):
                if parse_cluster_name(name).service != self.service:
                    return None
                if type_url == CDS:
                    return self.cluster(name)
                return self.load_assignment(name, source)
        except ValueError:
            return None
        return None

    def resources(self, source: Mapping[str, str] = {}) -> dict[str, dict[str, Any]]:
        """Every resource a caller with labels ``source`` needs, by type URL then name."""
        routes = self.route_configuration(source)
        clusters = sorted(_clusters_of(routes))
        return {
            LDS: {self.service: self.listener()},
            RDS: {self.service: routes},
            CDS: {name: self.cluster(name) for name in clusters},
            EDS: {name: self.load_assignment(name, source) for name in clusters},
        }

    # ------------------------------------------------------------ LDS

    def listener(self) -> Any:
        """The API listener named after the service, routes from RDS, router filter on."""
        manager = pb.HttpConnectionManager(
            rds=pb.Rds(config_source=_ads_source(), route_config_name=self.service),
            http_filters=[pb.HttpFilter(name=_ROUTER_FILTER, typed_config=_any(pb.Router()))],
        )
        return pb.Listener(
            name=self.service, api_listener=pb.ApiListener(api_listener=_any(manager))
        )

    # ------------------------------------------------------------ RDS

    def route_configuration(self, source: Mapping[str, str]) -> Any:
        """The routes of a caller whose labels are ``source`` (its ``--source``): first the
        table again for each method some node marks offline (without those nodes), then the
        table for every other call."""
        routes: list[Any] = []
        for method in self.state.offline():
            routes += self._table(source, method)
        routes += self._table(source, "")
        host = pb.VirtualHost(name=self.service, domains=["*"], routes=routes)
        return pb.RouteConfiguration(name=self.service, virtual_hosts=[host])

    def _table(self, source: Mapping[str, str], method: str) -> list[Any]:
        """docs/routing.md's steps 2-3 as routes, restricted to ``method`` when given."""
        out: list[Any] = []

        def add(match: Any, parts: Sequence[tuple[Mapping[str, str] | None, int]]) -> None:
            if method:
                match = _only_method(match, method)
                if match is None:
                    return
            out.extend(self._routes(match, self._to(parts, method), method))

        for version in self.state.versions():
            add(_match([_header(VERSION_HEADER, exact=version)]), [({"version": version}, 1)])
        add(_match([_header(VERSION_HEADER)]), [(None, 1)])
        for route in self.state.config.routes:
            if route.match.route or not _matches(source, route.match.source):
                continue
            headers = [
                _header(key, exact=value) for key, value in sorted(route.match.headers.items())
            ]
            add(
                _match(headers, route.match.method),
                [(dict(part.subset), part.weight) for part in route.to],
            )
        add(_match([]), [({}, 1)])
        return out

    def resolve(self, subset: Mapping[str, str] | None, method: str = "") -> str:
        """The cluster a call for ``subset`` goes to (``None``: a pinned, unknown version):
        the subset's own if it has nodes, else the first fallback that has, else the subset's
        (or the unknown-version) cluster, which drops the call with a message. ``method``:
        the call's, when some node marks it offline."""
        if subset is not None and self._select(subset, method):
            return cluster_name(self.service, subset, method)
        for fallback in self.state.config.fallback:
            if self._select(fallback, method):
                return cluster_name(self.service, fallback, method)
        return cluster_name(self.service, subset, method)

    def _select(self, subset: Mapping[str, str], method: str) -> tuple[Node, ...]:
        """The nodes whose labels hold every value of ``subset`` and that do not mark
        ``method`` offline (when given); once per subset and method of this translation."""
        wanted = selector(subset)
        key = (wanted, method)
        found = self._selected.get(key)
        if found is None:
            version = subset.get("version")
            candidates = self._labelled if version is None else self._by_version.get(version, [])
            found = tuple(
                node
                for node, labels, offline in candidates
                if selects(wanted, labels) and not (method and method_is_offline(offline, method))
            )
            if len(self._selected) < CACHE_LIMIT:
                self._selected[key] = found
        return found

    def _to(self, parts: Sequence[tuple[Mapping[str, str] | None, int]], method: str) -> Any:
        weights: dict[str, int] = {}
        for subset, weight in parts:
            if weight:
                name = self.resolve(subset, method)
                weights[name] = weights.get(name, 0) + weight
        action = pb.RouteAction()
        if len(weights) == 1:
            action.cluster = next(iter(weights))
        else:
            action.weighted_clusters.CopyFrom(
                pb.WeightedCluster(
                    clusters=[
                        pb.WeightedCluster.ClusterWeight(name=name, weight=pb.UInt32Value(value=w))
                        for name, w in weights.items()
                    ]
                )
            )
        if self.policy == "ring_hash" and self._ring.request_hash_header:
            header = self._ring.request_hash_header.lower()
            policy = pb.RouteAction.HashPolicy(
                header=pb.RouteAction.HashPolicy.Header(header_name=header)
            )
            action.hash_policy.append(policy)
        return action

    def _routes(self, match: Any, action: Any, method: str = "") -> list[Any]:
        """The route, preceded by one copy per methodConfig name it overlaps (retry, timeout)."""
        out: list[Any] = []
        default: MethodConfig | None = None
        for entry, name in _method_names(self.state.config.method_config):
            if not name.service:
                default = entry
                continue
            narrowed = _narrow(match, name, method)
            if narrowed is not None:
                out.append(_route(narrowed, _with_method_config(action, entry)))
                if narrowed == match:
                    return out  # the entry covers every call of this route: nothing is left
        out.append(_route(match, _with_method_config(action, default)))
        return out

    # ------------------------------------------------------------ CDS

    def cluster(self, name: str) -> Any:
        """The cluster ``name``: EDS over ADS, the service's policy and outlier detection."""
        cluster = pb.Cluster(
            name=name,
            type=pb.Cluster.EDS,
            eds_cluster_config=pb.Cluster.EdsClusterConfig(
                eds_config=_ads_source(), service_name=name
            ),
        )
        if self.policy == "ring_hash":
            cluster.lb_policy = pb.Cluster.RING_HASH
            cluster.ring_hash_lb_config.CopyFrom(
                pb.Cluster.RingHashLbConfig(
                    minimum_ring_size=pb.UInt64Value(value=self._ring.min_ring_size),
                    maximum_ring_size=pb.UInt64Value(value=self._ring.max_ring_size),
                    hash_function=pb.Cluster.RingHashLbConfig.XX_HASH,
                )
            )
        elif self.policy == "pick_first":
            pick_first = pb.TypedExtensionConfig(
                name="envoy.load_balancing_policies.pick_first", typed_config=_any(pb.PickFirst())
            )
            cluster.load_balancing_policy.CopyFrom(
                pb.LoadBalancingPolicy(
                    policies=[pb.LoadBalancingPolicy.Policy(typed_extension_config=pick_first)]
                )
            )
        else:
            cluster.lb_policy = pb.Cluster.ROUND_ROBIN
        if self.state.config.outlier_detection is not None:
            cluster.outlier_detection.CopyFrom(
                _outlier_detection(self.state.config.outlier_detection)
            )
        return cluster

    # ------------------------------------------------------------ EDS

    def load_assignment(self, name: str, source: Mapping[str, str] | None = None) -> Any:
        """The endpoints of cluster ``name`` for a caller with labels ``source`` (its locality
        decides the priorities and locality weights); no node: a drop of every call, with a
        message."""
        _, subset, method = parse_cluster_name(name)
        nodes = self._select(subset, method) if subset is not None else ()
        assignment = pb.ClusterLoadAssignment(cluster_name=name)
        if not nodes:
            drop = pb.ClusterLoadAssignment.Policy.DropOverload(
                category=self._no_match_message(subset, method),
                drop_percentage=pb.FractionalPercent(
                    numerator=100, denominator=pb.FractionalPercent.HUNDRED
                ),
            )
            assignment.policy.drop_overloads.append(drop)
            return assignment
        for priority, zones in enumerate(self._priorities(nodes, self._zone_of(source))):
            for zone, (members, weight) in sorted(zones.items()):
                self._add_localities(assignment, priority, zone, members, weight)
        return assignment

    def _zone_of(self, source: Mapping[str, str] | None) -> str:
        """The caller's locality: its source label of the locality key ("" when none)."""
        locality = self.state.config.locality
        return (source or {}).get(locality.key, "") if locality is not None else ""

    def _priorities(
        self, nodes: Sequence[Node], zone: str
    ) -> list[dict[str, tuple[list[Node], float | None]]]:
        """The nodes by priority, then by locality with the locality's share of the calls:
        without locality one priority and one locality; ``prefer_local`` the caller's zone
        first, the others as the failover; ``zone_aware`` Envoy's local and residual shares of
        the callers in ``zone`` as locality weights, the zones with no share as the failover."""
        locality = self.state.config.locality
        everything: list[dict[str, tuple[list[Node], float | None]]] = [{"": (list(nodes), None)}]
        if locality is None or not zone or len(nodes) < locality.min_cluster_size:
            return everything
        by_zone: dict[str, list[Node]] = {}
        for node in nodes:
            by_zone.setdefault(node.metadata.get(locality.key, ""), []).append(node)
        if zone not in by_zone or len(by_zone) < 2:
            return everything
        if locality.mode == "prefer_local":
            local = by_zone.pop(zone)
            rest = [node for members in by_zone.values() for node in members]
            return [{zone: (local, None)}, {"": (rest, None)}]
        upstream = {name: len(members) for name, members in by_zone.items()}
        split = zone_aware_shares(zone, self.state.callers, upstream)
        if split is None:
            return everything
        share, residual = split
        total = sum(residual.values())
        weights = {zone: share, **{z: (1 - share) * r / total for z, r in residual.items()}}
        first: dict[str, tuple[list[Node], float | None]] = {
            z: (by_zone[z], w) for z, w in weights.items() if w > 0
        }
        failover: dict[str, tuple[list[Node], float | None]] = {
            z: (members, None) for z, members in by_zone.items() if z not in first
        }
        return [first, failover] if failover else [first]

    def _add_localities(
        self, assignment: Any, priority: int, zone: str, members: list[Node], share: float | None
    ) -> None:
        """``members`` as one locality, or with unequal node weights (and a policy that honours
        them) one locality per node weighted by the node's weight; ``share`` (zone_aware) is
        the locality's share of the priority's calls, which the weights then divide."""
        weights = [node.weight or 1 for node in members]
        groups: list[tuple[list[Node], float, str]]
        if self._weighted and len(set(weights)) > 1:
            total = sum(weights) if share is not None else 1
            groups = [([n], w / total, n.key) for n, w in zip(members, weights, strict=True)]
        else:
            groups = [(members, 1.0, "")]
        for nodes, weight, sub_zone in groups:
            if share is not None:
                weight = max(1, round(share * weight * _WEIGHT_SCALE))
            locality = pb.LocalityLbEndpoints(
                locality=pb.Locality(zone=zone, sub_zone=sub_zone),
                load_balancing_weight=pb.UInt32Value(value=int(weight)),
                priority=priority,
            )
            locality.MergeFromString(_endpoints(nodes))
            assignment.endpoints.append(locality)

    def _no_match_message(self, subset: Mapping[str, str] | None, method: str) -> str:
        versions = ", ".join(self.state.versions()) or "none"
        if subset is None:
            what = "no node of the x-version asked for"
        elif not subset:
            what = "no node registered"
        else:
            what = "no node in subset " + ",".join(f"{k}={v}" for k, v in sorted(subset.items()))
        if method:
            what += f" serving {method}"
        return f"no match found conn: {self.service} has {what} (known versions: {versions})"


# ---------------------------------------------------------------- message helpers


def _any(message: Any) -> Any:
    packed = pb.Any()
    packed.Pack(message)
    return packed


def _ads_source() -> Any:
    return pb.ConfigSource(ads=pb.AggregatedConfigSource(), resource_api_version=pb.API_V3)


def _header(name: str, exact: str | None = None) -> Any:
    if exact is None:
        return pb.HeaderMatcher(name=name, present_match=True)
    return pb.HeaderMatcher(name=name, string_match=pb.StringMatcher(exact=exact))


def _match(headers: Sequence[Any], method: str | None = None) -> Any:
    match = pb.RouteMatch(headers=headers)
    if method is None or method.endswith("/"):
        match.prefix = method or ""
    else:
        match.path = method
    return match


def _route(match: Any, action: Any) -> Any:
    return pb.Route(match=match, route=action)


def _method_names(entries: Sequence[MethodConfig]) -> list[tuple[MethodConfig, MethodName]]:
    """Every (entry, name), most specific first: a method, then a service, then ``{}``."""
    pairs = [(entry, name) for entry in entries for name in entry.name]
    return sorted(pairs, key=lambda pair: (not pair[1].method, not pair[1].service))


def _only_method(match: Any, method: str) -> Any | None:
    """``match`` restricted to the calls of ``method`` (a full name, or a last part of any
    service), or None when they do not overlap."""
    short = method.rsplit("/", 1)[-1]
    full = method.startswith("/")
    restricted = pb.RouteMatch()
    restricted.CopyFrom(match)
    if match.path:
        same = match.path == method if full else match.path.rsplit("/", 1)[-1] == short
        return restricted if same else None
    if match.prefix:  # "/pkg.Service/"
        if full and not method.startswith(match.prefix):
            return None
        restricted.path = method if full else match.prefix + short
    elif full:
        restricted.path = method
    else:
        restricted.safe_regex.regex = f"^/[^/]+/{re.escape(short)}$"
    return restricted


def _narrow(match: Any, name: MethodName, method: str = "") -> Any | None:
    """``match`` restricted to the methods ``name`` covers, or None when they do not overlap.
    ``method``: the last part a regex match (from :func:`_only_method`) stands for."""
    wanted = f"/{name.service}/{name.method}"
    exact = bool(name.method)
    if match.HasField("safe_regex"):
        short = method.rsplit("/", 1)[-1]
        if name.method and name.method != short:
            return None
        narrowed = pb.RouteMatch()
        narrowed.CopyFrom(match)
        narrowed.path = f"/{name.service}/{short}"
        return narrowed
    current = match.path or match.prefix
    if match.path:
        overlaps = current == wanted if exact else current.startswith(wanted)
        path, is_exact = current, True
    elif current:  # a service prefix "/pkg.Service/"
        overlaps = wanted.startswith(current)
        path, is_exact = wanted, exact
    else:
        overlaps = True
        path, is_exact = wanted, exact
    if not overlaps:
        return None
    narrowed = pb.RouteMatch()
    narrowed.CopyFrom(match)
    if is_exact:
        narrowed.path = path
    else:
        narrowed.prefix = path
    return narrowed


def _with_method_config(action: Any, entry: MethodConfig | None) -> Any:
    if entry is None or (entry.retry_policy is None and entry.timeout is None):
        return action
    result = pb.RouteAction()
    result.CopyFrom(action)
    if entry.timeout is not None:
        result.max_stream_duration.max_stream_duration.CopyFrom(_duration(entry.timeout))
    if entry.retry_policy is not None:
        retry = _retry_policy(entry.retry_policy)
        if retry is not None:
            result.retry_policy.CopyFrom(retry)
    return result


def _retry_policy(policy: RetryPolicy) -> Any | None:
    codes = [code for code in policy.retryable_status_codes if code in _XDS_RETRY_CODES]
    if not codes:
        return None
    return pb.RetryPolicy(
        retry_on=",".join(code.lower().replace("_", "-") for code in codes),
        num_retries=pb.UInt32Value(value=policy.attempts - 1),
        retry_back_off=pb.RetryPolicy.RetryBackOff(
            base_interval=_duration(policy.initial_backoff),
            max_interval=_duration(policy.max_backoff),
        ),
    )


def _outlier_detection(config: OutlierDetection) -> Any:
    detection = pb.OutlierDetection(
        interval=_duration(config.interval),
        base_ejection_time=_duration(config.base_ejection_time),
        max_ejection_time=_duration(config.max_ejection_time),
        max_ejection_percent=pb.UInt32Value(value=config.max_ejection_percent),
        # Envoy's defaults turn success-rate ejection on; A50 wants it off unless configured.
        enforcing_success_rate=pb.UInt32Value(value=0),
        enforcing_failure_percentage=pb.UInt32Value(value=0),
    )
    rate = config.success_rate_ejection
    if rate is not None:
        detection.enforcing_success_rate.value = rate.enforcement_percentage
        detection.success_rate_stdev_factor.value = rate.stdev_factor
        detection.success_rate_minimum_hosts.value = rate.minimum_hosts
        detection.success_rate_request_volume.value = rate.request_volume
    failure = config.failure_percentage_ejection
    if failure is not None:
        detection.enforcing_failure_percentage.value = failure.enforcement_percentage
        detection.failure_percentage_threshold.value = failure.threshold
        detection.failure_percentage_minimum_hosts.value = failure.minimum_hosts
        detection.failure_percentage_request_volume.value = failure.request_volume
    return detection


def _duration(seconds: float) -> Any:
    duration = pb.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _endpoints(nodes: Sequence[Node]) -> bytes:
    """``LocalityLbEndpoints.lb_endpoints`` (field 2) of ``nodes``, serialized: each node's is
    built once and kept, and the parse of their concatenation is native code, so a change in a
    service of a thousand nodes costs a few milliseconds instead of tens."""
    return b"".join(_lb_endpoint_field(node.address, node.weight or 1) for node in nodes)


@functools.lru_cache(maxsize=1 << 16)
def _lb_endpoint_field(address: str, weight: int) -> bytes:
    host, port = parse_address(address)
    socket_address = pb.SocketAddress(address=host, port_value=port)
    endpoint = pb.LbEndpoint(
        endpoint=pb.Endpoint(address=pb.Address(socket_address=socket_address)),
        load_balancing_weight=pb.UInt32Value(value=weight),
    ).SerializeToString(deterministic=True)
    assert isinstance(endpoint, bytes)
    return _LB_ENDPOINTS_TAG + _varint(len(endpoint)) + endpoint


_LB_ENDPOINTS_TAG = bytes([2 << 3 | 2])  # field 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _clusters_of(routes: Any) -> set[str]:
    names: set[str] = set()
    for host in routes.virtual_hosts:
        for route in host.routes:
            if route.route.cluster:
                names.add(route.route.cluster)
            names.update(weighted.name for weighted in route.route.weighted_clusters.clusters)
    return names
