"""One ADS stream's protocol state: subscriptions, nonces, ACK/NACK, what is pushed (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.struct_pb2 import Struct

from grpc_etcd.node import Node
from grpc_etcd.snapshot import Snapshot
from grpc_etcd.xds import ServiceState, Translation
from grpc_etcd.xds._ads import PENDING, AdsStream, NotServed
from grpc_etcd.xds._protos import DiscoveryRequest
from grpc_etcd.xds.bootstrap import SOURCE_KEY
from grpc_etcd.xds.translate import CDS, EDS, LDS, RDS

SERVICE = "hw.srv.app"
V1 = f"{SERVICE}|version=v1"
ALL = f"{SERVICE}|*"


class Plane:
    """A lookup over one service's translation, swapped by the test."""

    def __init__(self, *versions: str) -> None:
        self.translation: Translation | None = None
        self.set(*versions)

    def set(self, *versions: str) -> None:
        nodes = {
            f"/hw/srv/app/{i}": Node(SERVICE, str(i), f"127.0.0.1:{9000 + i}", v, key=f"k{i}")
            for i, v in enumerate(versions)
        }
        self.translation = Translation(ServiceState.of(Snapshot(SERVICE, nodes)))

    def lookup(self, type_url: str, name: str, source: Mapping[str, str]) -> Any:
        if self.translation is None:
            return PENDING
        return self.translation.serialized(type_url, name, source)


def request(type_url: str, *names: str, nonce: str = "", version: str = "", **kw: Any) -> Any:
    return DiscoveryRequest(
        type_url=type_url,
        resource_names=list(names),
        response_nonce=nonce,
        version_info=version,
        **kw,
    )


def test_first_request_answered_and_ack_sends_nothing() -> None:
    plane, stream = Plane("v1"), AdsStream()
    metadata = Struct()
    metadata.update({SOURCE_KEY: {"version": "v2"}})
    first = request(LDS, SERVICE)
    first.node.id = "client-1"
    first.node.metadata.CopyFrom(metadata)
    stream.on_request(first)
    assert stream.node_id == "client-1"
    assert stream.source == {"version": "v2"}
    (response,) = stream.responses(plane.lookup)
    assert response.type_url == LDS
    assert len(response.resources) == 1 and response.version_info == "1" and response.nonce
    stream.on_request(request(LDS, SERVICE, nonce=response.nonce, version="1"))
    assert stream.acked_version(LDS) == "1"
    assert stream.responses(plane.lookup) == []


def test_nothing_is_sent_while_the_service_is_pending() -> None:
    plane, stream = Plane("v1"), AdsStream()
    plane.translation = None
    stream.on_request(request(LDS, SERVICE))
    stream.on_request(request(CDS, ALL))
    assert stream.responses(plane.lookup) == []
    plane.set("v1")
    assert [r.type_url for r in stream.responses(plane.lookup)] == [LDS, CDS]


def test_only_what_changed_is_pushed() -> None:
    plane, stream = Plane("v1"), AdsStream()
    for type_url, names in ((LDS, [SERVICE]), (RDS, [SERVICE]), (CDS, [V1, ALL]), (EDS, [V1, ALL])):
        stream.on_request(request(type_url, *names))
    sent = stream.responses(plane.lookup)
    assert [r.type_url for r in sent] == [LDS, RDS, CDS, EDS]
    for response in sent:
        stream.on_request(
            request(
                response.type_url,
                *stream.subscriptions()[response.type_url],
                nonce=response.nonce,
                version=response.version_info,
            )
        )
    assert stream.responses(plane.lookup) == []
    plane.set("v1", "v1")  # a second v1 node: only the endpoints of v1 and * change
    (eds,) = stream.responses(plane.lookup)
    assert eds.type_url == EDS and len(eds.resources) == 2
    plane.set("v1", "v1", "v2")  # a new version: a new pinned route, and * endpoints
    changed = stream.responses(plane.lookup)
    assert [(r.type_url, len(r.resources)) for r in changed] == [(RDS, 1), (EDS, 1)]


def test_nack_is_recorded_and_not_answered_with_the_same() -> None:
    plane, stream = Plane("v1"), AdsStream()
    stream.on_request(request(CDS, ALL))
    (response,) = stream.responses(plane.lookup)
    nack = request(CDS, ALL, nonce=response.nonce)
    nack.error_detail.message = "bad cluster"
    stream.on_request(nack)
    assert [n.message for n in stream.nacks] == ["bad cluster"]
    assert stream.acked_version(CDS) == ""
    assert stream.responses(plane.lookup) == []


def test_stale_nonce_is_ignored_and_unsubscribe_forgets() -> None:
    plane, stream = Plane("v1"), AdsStream()
    stream.on_request(request(EDS, V1))
    (first,) = stream.responses(plane.lookup)
    stream.on_request(request(EDS, V1, ALL, nonce=first.nonce))  # subscribe one more
    (second,) = stream.responses(plane.lookup)
    assert [len(second.resources)] == [1]  # only the new one: V1 did not change
    stream.on_request(request(EDS, nonce=first.nonce))  # stale: ignored
    assert stream.subscriptions()[EDS] == {V1, ALL}
    stream.on_request(request(EDS, ALL, nonce=second.nonce))  # drop V1
    stream.on_request(request(EDS, V1, ALL, nonce=second.nonce))  # and take it back
    (again,) = stream.responses(plane.lookup)
    assert len(again.resources) == 1  # V1 is sent again after it was forgotten


def test_a_listener_we_do_not_serve_gets_an_empty_answer() -> None:
    plane, stream = Plane("v1"), AdsStream()
    stream.on_request(request(LDS, "not.ours"))
    (response,) = stream.responses(plane.lookup)
    assert list(response.resources) == []


def test_a_resource_not_served_is_absent_and_named_with_its_reason_once() -> None:
    plane, stream = Plane("v1"), AdsStream()
    refused = NotServed("etcd refuses it")

    def lookup(type_url: str, name: str, source: Mapping[str, str]) -> Any:
        return refused if plane.translation is None else plane.lookup(type_url, name, source)

    plane.translation = None
    stream.on_request(request(LDS, SERVICE))
    stream.on_request(request(EDS, V1))
    lds, eds = stream.responses(lookup)
    for response in (lds, eds):
        assert list(response.resources) == []
        ((error),) = response.resource_errors
        assert error.resource_name.name in (SERVICE, V1)
        assert (error.error_detail.code, error.error_detail.message) == (5, "etcd refuses it")
        name = SERVICE if response.type_url == LDS else V1
        stream.on_request(request(response.type_url, name, nonce=response.nonce, version="1"))
    assert stream.responses(lookup) == []  # the same reason is not sent again
    plane.set("v1")
    lds, eds = stream.responses(lookup)
    assert [len(lds.resources), len(eds.resources)] == [1, 1]
    assert not lds.resource_errors and not eds.resource_errors
