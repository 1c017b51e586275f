"""The channels that call a service, as their leased keys in etcd tell (pure, no I/O).

A channel whose config needs to know the fleet's callers (``deterministic_subsetting``; the
locality mode ``zone_aware``) holds one key ``<root>/grpc-etcd/clients/<service>/<id>`` on a
lease of its own, with its labels in the value (``{"labels": {"zone": "a"}}``), and follows the
others under the same prefix. Each such channel then sees a :class:`ClientView`: every live
client sorted by id, with its labels, and its own place among them - the stable client index
that deterministic subsetting needs and that gRPC's clients lack.

The view is fed to the balancer the way snapshots are (``Balancer.update_clients``). A key
under the prefix that is not ours (not JSON, not the shape above) is left out with one warning
naming it; a label whose value is empty is dropped, with one warning too. The client keeps
routing either way.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .naming import _normalize_root, validate_service
from .snapshot import Change

__all__ = [
    "CLIENTS_DIR",
    "ZONE_ENV",
    "ZONE_LABEL",
    "Client",
    "ClientTracker",
    "ClientView",
    "client_key",
    "client_labels",
    "clients_prefix",
    "decode_client",
    "encode_client",
    "new_client_id",
]

#: Where client keys live, under the registry's root: ``/grpc-etcd/clients/<service>/<id>``.
CLIENTS_DIR = "/grpc-etcd/clients/"
#: The label naming a client's (and a node's) zone.
ZONE_LABEL = "zone"
#: The environment variable giving the caller's zone when ``source=`` names none.
ZONE_ENV = "GRPC_ETCD_ZONE"

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def clients_prefix(service: str, root: str = "") -> str:
    """The prefix of a service's client keys, with its slash: ``/grpc-etcd/clients/<service>/``."""
    validate_service(service)
    return f"{_normalize_root(root)}{CLIENTS_DIR}{service}/"


def client_key(service: str, client_id: str, root: str = "") -> str:
    """The key of one client of ``service``."""
    if not client_id or "/" in client_id:
        raise ValueError(f"client id {client_id!r} must be non-empty and contain no '/'")
    return clients_prefix(service, root) + client_id


def new_client_id() -> str:
    """A fresh client id (a UUID: ids sort in no meaningful order, so a new client lands at a
    random place among the others)."""
    return str(uuid.uuid4())


def client_labels(
    source: Mapping[str, str] | None, environ: Mapping[str, str], key: str = ZONE_LABEL
) -> dict[str, str]:
    """A channel's labels: its ``source=`` labels, with its locality under ``key`` (the
    config's ``locality.key``; ``zone`` without one) from ``$GRPC_ETCD_ZONE`` when ``source``
    names none. Empty values are left out (an unset variable is often empty)."""
    labels = {name: value for name, value in (source or {}).items() if value}
    zone = environ.get(ZONE_ENV, "").strip()
    if zone and key not in labels:
        labels[key] = zone
    return labels


def encode_client(labels: Mapping[str, str]) -> bytes:
    """The value of a client key: ``{"labels": {...}}``, compact, keys sorted."""
    return json.dumps({"labels": dict(labels)}, sort_keys=True, separators=(",", ":")).encode()


def decode_client(value: bytes) -> tuple[dict[str, str], list[str]]:
    """The labels of a client key's value, and the empty labels it dropped (by name).

    Raises ``ValueError`` (saying what is wrong) when the value is not ours. Unknown keys
    beside ``labels`` are ignored, so a later version may add some.
    """
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object (a {type(data).__name__})")
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError('"labels" must be an object of strings')
    empty = sorted(name for name, item in labels.items() if not item)
    return {name: item for name, item in labels.items() if item}, empty


@dataclass(frozen=True, slots=True)
class Client:
    """One calling channel: its id (the last part of its key) and its labels."""

    id: str
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)

    def __post_init__(self) -> None:
        if not isinstance(self.labels, MappingProxyType):
            object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@dataclass(frozen=True, slots=True)
class ClientView:
    """The live clients of one service as one channel sees them (immutable).

    ``clients`` is sorted by id and always holds ``own`` (with this channel's own labels),
    even before its key shows in etcd, so ``index`` is always defined. ``revision`` is the
    etcd revision the view was read at; 0 means it has not been read yet (only ``own``).
    """

    own: Client
    clients: tuple[Client, ...] = ()
    revision: int = 0

    def __post_init__(self) -> None:
        others = [c for c in self.clients if c.id != self.own.id]
        object.__setattr__(self, "clients", tuple(sorted((*others, self.own), key=lambda c: c.id)))

    @property
    def known(self) -> bool:
        """True once the view was read from etcd (before that it holds only ``own``)."""
        return self.revision > 0

    @property
    def count(self) -> int:
        """How many clients there are, this one included."""
        return len(self.clients)

    @property
    def index(self) -> int:
        """This channel's place among the clients sorted by id: 0 .. count - 1."""
        return next(i for i, c in enumerate(self.clients) if c.id == self.own.id)

    def place(self, label: str | None = None, value: str = "") -> tuple[int, int]:
        """This client's place on a ring of circumference 1, as a fraction ``(num, den)``:
        ``index / count`` once the view is known; before that, a point drawn from a hash of
        the id (so that clients starting together do not all take the same place).

        With ``label``, the place among the clients whose ``label`` is ``value`` (this one
        counted whatever its own key says: its zone may be newer than its key), so the callers
        of one zone are spread evenly around the ring, shifted by ``i / Z`` of a step for the
        ``i``-th of the ``Z`` values the clients carry: the zones' callers interleave, and
        together are spread evenly too when the zones have as many callers each."""
        if not self.known:
            digest = hashlib.blake2b(self.own.id.encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big"), 1 << 64
        if label is None:
            return self.index, self.count
        peers = [c for c in self.clients if c is self.own or c.labels.get(label, "") == value]
        values = sorted({*self.spread(label), value})
        return peers.index(self.own) * len(values) + values.index(value), len(peers) * len(values)

    def spread(self, label: str = ZONE_LABEL) -> dict[str, int]:
        """How many clients carry each value of ``label`` (those without it are not counted):
        how the calling channels are spread over the zones, for ``zone_aware``."""
        counts: dict[str, int] = {}
        for client in self.clients:
            value = client.labels.get(label)
            if value:
                counts[value] = counts.get(value, 0) + 1
        return dict(sorted(counts.items()))


class ClientTracker:
    """Turns what etcd holds under a clients prefix into :class:`ClientView` s (pure).

    Fed a full read (:meth:`resync`) or the changes of one watch response (:meth:`apply`);
    each returns the warnings to log, one per bad key until that key is good again or gone.
    A key one level deeper than ``<prefix><id>`` is another service's (a service named
    ``a/b`` lives under ``a``'s prefix) and is skipped without a word.
    """

    def __init__(self, prefix: str, own: Client) -> None:
        self.prefix = prefix
        self.view = ClientView(own)
        self._clients: dict[str, Client] = {}
        self._warned: dict[str, str] = {}  # key -> the warning given

    def resync(self, kvs: Iterable[tuple[str, bytes]], revision: int) -> list[str]:
        """Take a full read of the prefix at ``revision``; the new warnings."""
        warnings: list[str] = []
        clients: dict[str, Client] = {}
        seen: set[str] = set()
        for key, value in kvs:
            seen.add(key)
            client = self._read(key, value, warnings)
            if client is not None:
                clients[key] = client
        for key in set(self._warned) - seen:
            del self._warned[key]
        self._clients = clients
        self._publish(revision)
        return warnings

    def apply(self, changes: Iterable[Change], revision: int) -> list[str]:
        """Take one watch response's changes (in etcd order); the new warnings."""
        warnings: list[str] = []
        for change in changes:
            if change.type == "delete":
                self._clients.pop(change.key, None)
                self._warned.pop(change.key, None)
                continue
            client = self._read(change.key, change.value, warnings)
            if client is not None:
                self._clients[change.key] = client
            else:
                self._clients.pop(change.key, None)
        self._publish(revision)
        return warnings

    def _read(self, key: str, value: bytes, warnings: list[str]) -> Client | None:
        client_id = key[len(self.prefix) :] if key.startswith(self.prefix) else ""
        if not client_id or "/" in client_id:
            return None
        fault = None
        try:
            labels, empty = decode_client(value)
        except ValueError as exc:
            fault = f"ignoring client key {key}: {exc}"
            labels, empty = {}, []
        if empty:
            fault = f"client key {key}: empty label {', '.join(map(repr, empty))} left out"
        if fault is None:
            self._warned.pop(key, None)
        elif self._warned.get(key) != fault:
            self._warned[key] = fault
            warnings.append(fault)
        if fault is not None and not empty:
            return None
        return Client(client_id, labels)

    def _publish(self, revision: int) -> None:
        own = self.view.own
        self.view = ClientView(own, tuple(self._clients.values()), max(revision, 1))
