"""The Envoy v3 messages we build, imported in one place.

``xds-protos`` ships no type information: its modules are loaded with importlib, so every
name here is ``Any`` to mypy. The rest of the package imports them from this module only.
"""

from __future__ import annotations

from importlib import import_module

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

_ENVOY = "envoy."
cluster_pb2 = import_module(_ENVOY + "config.cluster.v3.cluster_pb2")
outlier_detection_pb2 = import_module(_ENVOY + "config.cluster.v3.outlier_detection_pb2")
address_pb2 = import_module(_ENVOY + "config.core.v3.address_pb2")
base_pb2 = import_module(_ENVOY + "config.core.v3.base_pb2")
config_source_pb2 = import_module(_ENVOY + "config.core.v3.config_source_pb2")
extension_pb2 = import_module(_ENVOY + "config.core.v3.extension_pb2")
endpoint_components_pb2 = import_module(_ENVOY + "config.endpoint.v3.endpoint_components_pb2")
endpoint_pb2 = import_module(_ENVOY + "config.endpoint.v3.endpoint_pb2")
api_listener_pb2 = import_module(_ENVOY + "config.listener.v3.api_listener_pb2")
listener_pb2 = import_module(_ENVOY + "config.listener.v3.listener_pb2")
route_components_pb2 = import_module(_ENVOY + "config.route.v3.route_components_pb2")
route_pb2 = import_module(_ENVOY + "config.route.v3.route_pb2")
router_pb2 = import_module(_ENVOY + "extensions.filters.http.router.v3.router_pb2")
http_connection_manager_pb2 = import_module(
    _ENVOY + "extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2"
)
pick_first_pb2 = import_module(
    _ENVOY + "extensions.load_balancing_policies.pick_first.v3.pick_first_pb2"
)
ads_pb2_grpc = import_module(_ENVOY + "service.discovery.v3.ads_pb2_grpc")
discovery_pb2 = import_module(_ENVOY + "service.discovery.v3.discovery_pb2")
string_pb2 = import_module(_ENVOY + "type.matcher.v3.string_pb2")
percent_pb2 = import_module(_ENVOY + "type.v3.percent_pb2")

Listener = listener_pb2.Listener
ApiListener = api_listener_pb2.ApiListener
HttpConnectionManager = http_connection_manager_pb2.HttpConnectionManager
Rds = http_connection_manager_pb2.Rds
HttpFilter = http_connection_manager_pb2.HttpFilter
Router = router_pb2.Router
RouteConfiguration = route_pb2.RouteConfiguration
VirtualHost = route_components_pb2.VirtualHost
Route = route_components_pb2.Route
RouteMatch = route_components_pb2.RouteMatch
RouteAction = route_components_pb2.RouteAction
WeightedCluster = route_components_pb2.WeightedCluster
HeaderMatcher = route_components_pb2.HeaderMatcher
RetryPolicy = route_components_pb2.RetryPolicy
StringMatcher = string_pb2.StringMatcher
Cluster = cluster_pb2.Cluster
OutlierDetection = outlier_detection_pb2.OutlierDetection
LoadBalancingPolicy = cluster_pb2.LoadBalancingPolicy
TypedExtensionConfig = extension_pb2.TypedExtensionConfig
PickFirst = pick_first_pb2.PickFirst
ConfigSource = config_source_pb2.ConfigSource
AggregatedConfigSource = config_source_pb2.AggregatedConfigSource
API_V3 = config_source_pb2.ApiVersion.V3
ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment
LocalityLbEndpoints = endpoint_components_pb2.LocalityLbEndpoints
LbEndpoint = endpoint_components_pb2.LbEndpoint
Endpoint = endpoint_components_pb2.Endpoint
Locality = base_pb2.Locality
Address = address_pb2.Address
SocketAddress = address_pb2.SocketAddress
FractionalPercent = percent_pb2.FractionalPercent
DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
ResourceError = discovery_pb2.ResourceError  # xRFC TP3: why a resource is not sent
ResourceName = discovery_pb2.ResourceName
Status = ResourceError.DESCRIPTOR.fields_by_name["error_detail"].message_type._concrete_class
AdsServicer = ads_pb2_grpc.AggregatedDiscoveryServiceServicer
add_ads_servicer = ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server
AdsStub = ads_pb2_grpc.AggregatedDiscoveryServiceStub
Any = any_pb2.Any
Duration = duration_pb2.Duration
UInt32Value = wrappers_pb2.UInt32Value
UInt64Value = wrappers_pb2.UInt64Value
BoolValue = wrappers_pb2.BoolValue
