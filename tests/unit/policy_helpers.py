"""Endpoints for the pure policy and balancer tests: one node per name, each at its own address."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from grpc_etcd.node import MethodInfo, Node
from grpc_etcd.policies import ConnState, Endpoint, Picker
from grpc_etcd.routing import CallInfo

_PORTS: dict[str, int] = {}


def node(
    name: str,
    version: str = "v1",
    *,
    weight: int | None = None,
    online: bool = True,
    offline: tuple[str, ...] = (),
    **labels: str,
) -> Node:
    """A node ``name`` at an address of its own (the same one each time for the same name)."""
    port = _PORTS.setdefault(name, 20000 + len(_PORTS))
    metadata = dict(labels)
    if weight is not None:
        metadata["weight"] = str(weight)
    methods = {m: MethodInfo(online=False) for m in offline}
    return Node("s", name, f"127.0.0.1:{port}", version, metadata, methods, online=online)


def ep(
    name: str,
    version: str = "v1",
    state: ConnState = ConnState.READY,
    *,
    error: str | None = None,
    serving: bool = True,
    ejected: bool = False,
    **kwargs: object,
) -> Endpoint[str]:
    """An endpoint whose sub-channel is the node's name (so picks read as names)."""
    return Endpoint(node(name, version, **kwargs), name, state, error, serving, ejected)  # type: ignore[arg-type]


def ready(*names: str, **kwargs: object) -> list[Endpoint[str]]:
    """READY endpoints of version v1."""
    return [ep(name, **kwargs) for name in names]  # type: ignore[arg-type]


def spread(picker: Picker[str], n: int, call: CallInfo | None = None) -> Counter[str]:
    """How ``n`` picks of ``call`` spread over the sub-channels."""
    call = call or CallInfo("/pkg.Api/Get")
    return Counter(picker.pick(call).subchannel for _ in range(n))


def share(counts: Mapping[str, int], name: str) -> float:
    """``name``'s share of all the picks counted."""
    return counts.get(name, 0) / sum(counts.values())
