"""Nodes (one registered server instance) and the checks of every argument that describes
one (pure, no I/O). Their etcd records are encoded and decoded in ``grpc_etcd.record``; its
``encode_record``, ``decode_record`` and ``naming_op`` stay importable from here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from .naming import instance_key, new_instance_id, validate_dotted

if TYPE_CHECKING:
    from .record import decode_record, encode_record, naming_op

__all__ = [
    "DEFAULT_LIMITING",
    "DEFAULT_VERSION",
    "MAX_LEASE_TTL",
    "MIN_TTL",
    "MethodInfo",
    "Methods",
    "Node",
    "RecordFormat",
    "build_node",
    "check_address",
    "check_metadata",
    "check_methods",
    "check_ttl",
    "check_version",
    "check_weight",
    "decode_record",
    "encode_record",
    "naming_op",
    "parse_address",
    "updated_node",
]

#: What the Go original writes for ``limiting`` when it is told nothing else (calls per second).
DEFAULT_LIMITING = 10
#: A node's version when none is given: what ``register()`` writes, and what a record that
#: names no version is read as (the Go original registers ``"latest"`` when told none).
DEFAULT_VERSION = "latest"
#: ``metadata`` key carrying a node's weight, so the Go original (no weight field) still reads us.
WEIGHT_KEY = "weight"

#: etcd's ``lease.MaxLeaseTTL``: a grant above it fails with "too large lease TTL".
MAX_LEASE_TTL = 9_000_000_000
#: below 2 s the keep-alive (every TTL/3) would have no time to confirm the lease
MIN_TTL = 2

#: The format of a node's record: the Go original's (``seed``) or etcd's naming package's.
RecordFormat = Literal["seed", "naming"]
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One RPC method a node serves: the original's ``endpoints`` entry.

    ``online=False`` takes the method offline (its calls skip this node); ``limiting_switch``,
    ``limiting`` (calls per second), ``fuse`` and ``defaults`` are the Go original's fields,
    kept on the wire and not acted on.
    """

    online: bool = True
    limiting_switch: bool = False
    limiting: int = DEFAULT_LIMITING
    fuse: bool = False
    defaults: bytes | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """One registered server instance, as read from or written to etcd.

    ``service`` is its dotted name, ``id`` the last part of its ``key``, ``address`` the
    ``host:port`` clients dial, ``version`` and ``metadata`` its labels for routing,
    ``methods`` the record's ``endpoints`` (method name -> :class:`MethodInfo`), ``format``
    the record format it was read in (``"seed"``: the Go original's; ``"naming"``: etcd's Go
    naming package's).
    """

    service: str
    id: str
    address: str
    version: str = DEFAULT_VERSION
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    methods: Mapping[str, MethodInfo] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    key: str = ""
    format: RecordFormat = "seed"
    #: False when the record marks the whole node offline (``node.online: false``, the seed's
    #: later copy); such a node gets no calls. Not written: the Go original has no such field.
    online: bool = True

    def __post_init__(self) -> None:
        # Freeze the mappings so a Node can be shared between threads without copies.
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if not isinstance(self.methods, MappingProxyType):
            object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))

    @property
    def weight(self) -> int | None:
        """The node's weight from ``metadata["weight"]``, or None when absent or not an integer."""
        raw = self.metadata.get(WEIGHT_KEY)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            return None
        return value if value >= 0 else None


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); raise ``ValueError`` on anything else."""
    if not isinstance(address, str) or not address:
        raise ValueError(f"address must be 'host:port', got {address!r}")
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"address {address!r} must be '[ipv6]:port'")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"address {address!r} must be 'host:port' (IPv6 as '[addr]:port')")
    if not host:
        raise ValueError(f"address {address!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} has no valid port (1-65535)")
    return host, int(port)


# ---------------------------------------------------------------- checks
# Every argument that ends up in a record is checked here, for register() and update() alike,
# so that we never write a record the Go original cannot read.

Methods = Iterable[str] | Mapping[str, MethodInfo] | None


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def check_address(address: str, advertise: str | None = None) -> str:
    """The address clients should dial: ``advertise`` when given, else ``address``; both
    ``host:port``, and the one returned not a wildcard (``0.0.0.0``, ``[::]``)."""
    host, _ = parse_address(address)
    if advertise is not None:
        adv_host, _ = parse_address(advertise)
        if _is_unspecified(adv_host):
            raise ValueError(f"advertise={advertise!r} must be an address clients can dial")
        return advertise
    if _is_unspecified(host):
        raise ValueError(
            f"address {address!r} is a wildcard that clients cannot dial; pass "
            f"advertise='HOST:PORT' with the address clients should use"
        )
    return address


def check_version(version: str) -> str:
    """A version label: a non-empty string without whitespace."""
    if not isinstance(version, str) or not version or any(c.isspace() for c in version):
        raise ValueError(f"version must be a non-empty string without spaces, got {version!r}")
    return _unicode(version, "version")


def _unicode(text: str, what: str) -> str:
    """``text`` if it can be written as UTF-8 (a lone surrogate cannot: the record would fail
    to encode, or be mangled by a reader)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid Unicode (a lone surrogate)") from None
    return text


def check_weight(weight: int) -> int:
    """A weight: a non-negative int (``bool`` refused)."""
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ValueError(f"weight must be a non-negative int, got {weight!r}")
    return weight


def check_metadata(metadata: Mapping[str, str] | None, weight: int | None = None) -> dict[str, str]:
    """The metadata to write: a str -> str map (the Go original's ``map[string]string``), with
    ``weight`` stored as ``metadata["weight"]``. A ``metadata["weight"]`` that is not a
    non-negative integer, or that disagrees with ``weight``, is refused."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata must map str to str, got {k!r}: {v!r}")
        _unicode(k, "metadata key")
        _unicode(v, f"metadata[{k!r}]")
    given = meta.get(WEIGHT_KEY)
    if given is not None and not (given.isascii() and given.isdigit()):
        raise ValueError(f"metadata[{WEIGHT_KEY!r}] must be a non-negative integer, got {given!r}")
    if weight is not None:
        check_weight(weight)
        if given is not None and int(given) != weight:
            raise ValueError(
                f"metadata[{WEIGHT_KEY!r}]={given!r} disagrees with weight={weight}; give one"
            )
        meta[WEIGHT_KEY] = str(weight)
    return meta


def check_ttl(ttl: int) -> int:
    """A lease TTL in whole seconds, from ``MIN_TTL`` to etcd's ``MAX_LEASE_TTL``."""
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"ttl must be an int (seconds), got {ttl!r}")
    if not MIN_TTL <= ttl <= MAX_LEASE_TTL:
        raise ValueError(
            f"ttl must be from {MIN_TTL} to {MAX_LEASE_TTL} seconds (etcd's maximum), got {ttl}"
        )
    return ttl


def check_methods(methods: Methods) -> dict[str, MethodInfo]:
    """The methods a node serves, as ``register(methods=...)`` takes them: method names (each
    gets a default ``MethodInfo``), a name -> ``MethodInfo`` mapping, or None (none named)."""
    if methods is None:
        return {}
    if isinstance(methods, str):
        raise ValueError("methods must be a list of method names, not one string")
    if isinstance(methods, Mapping):
        result = dict(methods)
        for name, info in result.items():
            if not isinstance(name, str) or not isinstance(info, MethodInfo):
                raise ValueError(f"methods must map names to MethodInfo, got {name!r}: {info!r}")
        return result
    names = list(methods)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"method names must be non-empty strings, got {name!r}")
    return {name: MethodInfo() for name in names}


def build_node(
    service: str,
    *,
    address: str,
    version: str,
    metadata: Mapping[str, str] | None,
    weight: int | None,
    methods: Methods,
    advertise: str | None,
    instance_id: str | None,
    root: str,
) -> Node:
    """The node a ``register()`` call describes, with every argument checked."""
    validate_dotted(service)
    dial = check_address(address, advertise)
    meta = check_metadata(metadata, weight)
    method_map = check_methods(methods)
    node_id = instance_id or new_instance_id(service)
    return Node(
        service=service,
        id=node_id,
        address=dial,
        version=check_version(version),
        metadata=meta,
        methods=method_map,
        key=instance_key(service, node_id, root),
    )


def updated_node(
    node: Node,
    *,
    version: str | None = None,
    metadata: Mapping[str, str] | None = None,
    weight: int | None = None,
) -> Node:
    """``node`` with a new version, metadata (replacing the whole map) and/or weight, checked
    as ``build_node`` checks them; what is not given stays."""
    meta = node.metadata if metadata is None else metadata
    if weight is not None and metadata is None:
        meta = {k: v for k, v in meta.items() if k != WEIGHT_KEY}
    return Node(
        service=node.service,
        id=node.id,
        address=node.address,
        version=node.version if version is None else check_version(version),
        metadata=check_metadata(meta, weight),
        methods=node.methods,
        key=node.key,
        format=node.format,
    )


_CODECS = frozenset({"decode_record", "encode_record", "naming_op"})


def __getattr__(name: str) -> Any:
    # The codecs moved to grpc_etcd.record, which imports this module: re-exported lazily.
    if name in _CODECS:
        from . import record

        return getattr(record, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
