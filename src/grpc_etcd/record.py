"""A node's etcd record: encoded as the Go original writes it, decoded from either format
(pure, no I/O).

Two record formats are read:

* the Go original's (``hwholiday/learning_tools``), which we also write, byte for byte::

    {"node":{"name":"app","path":"/hwholiday/srv/app","id":"app-...","version":"v1",
     "address":"127.0.0.1:18089"},"metadata":null,"endpoints":{"ApiTest":{...}}}

* etcd's own Go naming package's (``client/v3/naming/endpoints``)::

    {"Op":0,"Addr":"127.0.0.1:8080","Metadata":...}

Decoding follows Go's ``encoding/json``: field names match case-insensitively and unknown
fields are ignored. A record that is not JSON, or has no ``node`` / ``Addr``, raises
:class:`~grpc_etcd.errors.RecordError` naming its key. A record that names no version gets
``DEFAULT_VERSION`` (``"latest"``, what the Go original registers when told none).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ._strict_json import loads_strict
from .errors import RecordError
from .naming import service_name, service_path
from .node import DEFAULT_VERSION, MethodInfo, Node

__all__ = ["decode_record", "encode_record", "naming_op"]

_SURROGATE = re.compile("[\ud800-\udfff]")


# ---------------------------------------------------------------- encoding


def _go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``encoding/json`` writes it (HTML-safe escapes, map keys sorted)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # '<', '>' and '&' can only occur inside strings, so a plain replace is exact.
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return text.encode("utf-8")


def encode_record(node: Node, root: str = "") -> bytes:
    """The node's record exactly as the Go original writes it (field order included)."""
    endpoints = {
        name: {
            "online": info.online,
            "limiting_switch": info.limiting_switch,
            "limiting": info.limiting,
            "fuse": info.fuse,
            "defaults": None
            if info.defaults is None
            else base64.b64encode(info.defaults).decode("ascii"),
        }
        for name, info in sorted(node.methods.items())
    }
    record = {
        "node": {
            "name": service_name(node.service),
            "path": service_path(node.service, root),
            "id": node.id,
            "version": node.version,
            "address": node.address,
        },
        "metadata": dict(sorted(node.metadata.items())) if node.metadata else None,
        "endpoints": endpoints,
    }
    return _go_json(record)


# ---------------------------------------------------------------- decoding


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """Go's rule: an exact key wins, else the first key equal ignoring case."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def _string(value: Any, what: str, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(key, f"{what} must be a string, got {type(value).__name__}")
    return value


def _scrub(value: Any) -> Any:
    """Lone UTF-16 surrogates (``"\\ud800"``) replaced by U+FFFD, as Go's decoder does: no
    string of a node then fails to encode (printing it, writing it to a log or a header)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


def _load_json(data: bytes | str, key: str) -> Any:
    """The JSON value of a record, as strictly as Go reads it (no ``NaN`` or ``Infinity``);
    ``RecordError`` naming ``key`` for anything else, however deeply nested."""
    try:
        value = loads_strict(data)
    except ValueError as exc:
        raise RecordError(key, str(exc)) from None
    if isinstance(data, bytes):  # valid UTF-8 has no surrogates: only escapes can make them
        suspect = b"\\ud" in data or b"\\uD" in data
    else:
        suspect = "\\ud" in data or "\\uD" in data or _SURROGATE.search(data) is not None
    if suspect:
        value = _scrub(value)
    return value


def _limiting(value: Any, name: str, key: str) -> int:
    if not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(key, f"endpoints[{name!r}].limiting is out of range")
    return int(value)


def _version(value: Any, what: str, key: str) -> str:
    return DEFAULT_VERSION if value is None else _string(value, what, key)


def _string_map(value: Any, what: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(key, f"{what} must be an object or null")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _decode_methods(value: Any, key: str) -> dict[str, MethodInfo]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(key, "endpoints must be an object or null")
    methods: dict[str, MethodInfo] = {}
    for name, raw in value.items():
        if raw is None:
            methods[name] = MethodInfo()
            continue
        if not isinstance(raw, dict):
            raise RecordError(key, f"endpoints[{name!r}] must be an object")
        defaults = _get(raw, "defaults")
        try:
            decoded = None if defaults is None else base64.b64decode(defaults, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise RecordError(key, f"endpoints[{name!r}].defaults is not base64") from exc
        limiting = _get(raw, "limiting")
        online = _get(raw, "online")
        methods[name] = MethodInfo(
            online=bool(online) if online is not None else False,
            limiting_switch=bool(_get(raw, "limiting_switch")),
            limiting=_limiting(limiting, name, key),
            fuse=bool(_get(raw, "fuse")),
            defaults=decoded,
        )
    return methods


def _id_from_key(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1] if key else ""


def decode_record(data: bytes | str, *, key: str = "", service: str = "") -> Node:
    """Decode a record of either format into a :class:`Node`.

    ``key`` is the etcd key it was read from (used in errors and as the id fallback);
    ``service`` the service being watched. Raises :class:`RecordError` naming the key.
    """
    obj = _load_json(data, key)
    if not isinstance(obj, dict):
        raise RecordError(key, "record is not a JSON object")

    node_obj = _get(obj, "node")
    if node_obj is not None:
        if not isinstance(node_obj, dict):
            raise RecordError(key, "'node' must be an object")
        address = _string(_get(node_obj, "address"), "node.address", key)
        if not address:
            raise RecordError(key, "record has no node.address")
        return Node(
            service=service,
            id=_string(_get(node_obj, "id"), "node.id", key) or _id_from_key(key),
            address=address,
            version=_version(_get(node_obj, "version"), "node.version", key),
            metadata=_string_map(_get(obj, "metadata"), "metadata", key),
            methods=_decode_methods(_get(obj, "endpoints"), key),
            key=key,
            format="seed",
            online=_get(node_obj, "online") is not False,
        )

    addr = _get(obj, "addr")
    if addr is not None:
        address = _string(addr, "Addr", key)
        if not address:
            raise RecordError(key, "record has an empty Addr")
        raw_meta = _get(obj, "metadata")
        metadata = _string_map(raw_meta, "Metadata", key) if isinstance(raw_meta, dict) else {}
        return Node(
            service=service,
            id=_id_from_key(key),
            address=address,
            version=metadata.get("version", DEFAULT_VERSION),
            metadata=metadata,
            key=key,
            format="naming",
        )
    raise RecordError(
        key, "record has neither 'node' (grpc-etcd / Go original) nor 'Addr' (etcd naming)"
    )


def naming_op(data: bytes | str) -> int:
    """The ``Op`` of an etcd-naming record (0 add, 1 delete); 0 for any other record."""
    try:
        obj = _load_json(data, "")
    except RecordError:
        return 0
    op = _get(obj, "op") if isinstance(obj, dict) and _get(obj, "node") is None else None
    return op if isinstance(op, int) else 0
