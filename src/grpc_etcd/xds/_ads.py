"""One ADS stream's protocol state, state of the world, v3 (no I/O, like h11).

The I/O shell feeds each ``DiscoveryRequest`` to :meth:`AdsStream.on_request` and, after every
request and every change of the control plane's state, sends what :meth:`AdsStream.responses`
returns. What a stream was last sent is remembered per resource, so only what changed is pushed:
listeners and clusters (whose responses must carry every subscribed resource, an absent one
means deleted) are sent whole when any of them changed; route configurations and endpoints only
the changed ones. Nothing is sent for a type while one of its resources is still pending (its
service not yet read from etcd): a partial listener or cluster list would delete the others.
A resource the control plane cannot serve (:class:`NotServed`) is left out, as one that does
not exist, and named with its reason in the response's ``resource_errors`` (xRFC TP3, gRFC
A88): a client that reads them fails its calls at once with that reason instead of waiting
out its does-not-exist timer (15 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from . import _protos as pb
from .bootstrap import source_of
from .translate import CDS, LDS, TYPE_URLS

__all__ = ["PENDING", "AdsStream", "Lookup", "Nack", "NotServed"]

log = logging.getLogger("grpc_etcd.xds")


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


#: What a lookup returns for a resource whose service is not read from etcd yet.
PENDING: Any = _Pending()


@dataclass(frozen=True, slots=True)
class NotServed:
    """What a lookup returns for a resource that cannot be served now: ``reason`` is what its
    client is told (status NOT_FOUND); the resource is absent, as one that does not exist."""

    reason: str


#: ``lookup(type_url, name, source)`` -> the serialized resource, ``PENDING``, ``NotServed``
#: or None (not ours).
Lookup = Callable[[str, str, Mapping[str, str]], Any]
_FULL_STATE = frozenset({LDS, CDS})
_NOT_FOUND = 5  # google.rpc.Code


@dataclass(frozen=True, slots=True)
class Nack:
    """A response the client refused: which type, which nonce, and why."""

    type_url: str
    nonce: str
    message: str


@dataclass
class _TypeState:
    names: frozenset[str] = frozenset()
    sent: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # the reasons sent (NotServed)
    nonce: str = ""
    version: int = 0
    acked: str = ""
    reply_due: bool = False  # a request that changed the subscription waits for an answer


class AdsStream:
    """The state of one client's ADS stream."""

    def __init__(self) -> None:
        self.node_id = ""
        self.source: dict[str, str] = {}
        self.nacks: list[Nack] = []
        self._types: dict[str, _TypeState] = {}
        self._nonces = 0

    def subscriptions(self) -> dict[str, frozenset[str]]:
        """The resource names subscribed, by type URL."""
        return {url: state.names for url, state in self._types.items() if state.names}

    def acked_version(self, type_url: str) -> str:
        """The last ``version_info`` of ``type_url`` the client accepted ('' before any)."""
        state = self._types.get(type_url)
        return state.acked if state else ""

    def on_request(self, request: Any) -> None:
        """Take in a request: its node (the first one carries it), subscription, ACK or NACK."""
        if request.HasField("node") and request.node.id:
            self.node_id = request.node.id
            metadata = (
                MessageToDict(request.node.metadata) if request.node.HasField("metadata") else {}
            )
            self.source = source_of(metadata)
            zone = request.node.locality.zone
            if zone and "zone" not in self.source:  # the bootstrap's --zone: its locality
                self.source["zone"] = zone
        state = self._types.setdefault(request.type_url, _TypeState())
        if request.response_nonce and request.response_nonce != state.nonce:
            return  # answers a response that a newer one replaced: ignore, as the protocol says
        if request.HasField("error_detail"):
            nack = Nack(request.type_url, request.response_nonce, request.error_detail.message)
            self.nacks.append(nack)
            log.warning(
                "client %s refused %s (nonce %s): %s",
                self.node_id or "?",
                request.type_url.rsplit(".", 1)[-1],
                nack.nonce,
                nack.message,
            )
        elif request.response_nonce:
            state.acked = request.version_info
        names = frozenset(request.resource_names)
        if names != state.names or not request.response_nonce:
            state.reply_due = True
        for gone in state.names - names:
            state.sent.pop(gone, None)
            state.errors.pop(gone, None)
        state.names = names

    def responses(self, lookup: Lookup) -> list[Any]:
        """The responses to send now (possibly none), in LDS, RDS, CDS, EDS order."""
        out: list[Any] = []
        for type_url in TYPE_URLS:
            state = self._types.get(type_url)
            if state is None:
                continue
            response = self._response(type_url, state, lookup)
            if response is not None:
                out.append(response)
        return out

    def _response(self, type_url: str, state: _TypeState, lookup: Lookup) -> Any | None:
        current: dict[str, bytes] = {}
        errors: dict[str, str] = {}
        pending = False
        for name in sorted(state.names):
            resource = lookup(type_url, name, self.source)
            if resource is PENDING:
                pending = True
            elif isinstance(resource, NotServed):
                errors[name] = resource.reason
            elif resource is not None:
                current[name] = resource
        if type_url in _FULL_STATE:
            unchanged = current == state.sent and errors == state.errors
            if pending or (unchanged and not state.reply_due):
                return None
            send, tell = current, errors
            state.sent, state.errors = dict(current), dict(errors)
        else:
            send = {name: data for name, data in current.items() if state.sent.get(name) != data}
            tell = {name: why for name, why in errors.items() if state.errors.get(name) != why}
            if not send and not tell:
                return None
            state.sent.update(send)
            state.errors.update(tell)
            for name in send:
                state.errors.pop(name, None)
            for name in tell:
                state.sent.pop(name, None)
        state.reply_due = False
        state.version += 1
        self._nonces += 1
        state.nonce = str(self._nonces)
        return pb.DiscoveryResponse(
            version_info=str(state.version),
            type_url=type_url,
            nonce=state.nonce,
            resources=[pb.Any(type_url=type_url, value=data) for _, data in sorted(send.items())],
            resource_errors=[
                pb.ResourceError(
                    resource_name=pb.ResourceName(name=name),
                    error_detail=pb.Status(code=_NOT_FOUND, message=why),
                )
                for name, why in sorted(tell.items())
            ],
        )
