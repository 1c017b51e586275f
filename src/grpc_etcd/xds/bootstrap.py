"""The bootstrap document an unmodified gRPC client reads to find the control plane (pure).

Put it in ``GRPC_XDS_BOOTSTRAP_CONFIG`` (or a file named by ``GRPC_XDS_BOOTSTRAP``) before the
process creates its first ``xds:///`` channel: clients read it once per process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..node import parse_address

__all__ = [
    "SOURCE_KEY",
    "bootstrap_config",
    "bootstrap_json",
    "channel_creds",
    "parse_labels",
    "source_of",
]

#: The ``node.metadata`` key holding the caller's labels (a route's ``match.source``).
SOURCE_KEY = "grpc-etcd.source"
DEFAULT_NODE_ID = "grpc-etcd-client"


def channel_creds(
    cacert: str | None = None, cert: str | None = None, key: str | None = None
) -> list[dict[str, Any]]:
    """The bootstrap's ``channel_creds``: ``insecure`` without ``cacert``; else gRFC A65's
    ``tls`` (the CA that signed the control plane's certificate, plus the client's own
    certificate and key for mutual TLS). Paths are made absolute: the client reads the files,
    from wherever it runs."""
    if (cert is None) != (key is None):
        raise ValueError("the client certificate and its key go together (--cert, --key)")
    if cacert is None:
        if cert is not None:
            raise ValueError("a client certificate is for TLS: give --cacert too")
        return [{"type": "insecure"}]
    config = {"ca_certificate_file": os.path.abspath(cacert)}
    if cert is not None and key is not None:
        config["certificate_file"] = os.path.abspath(cert)
        config["private_key_file"] = os.path.abspath(key)
    return [{"type": "tls", "config": config}]


def bootstrap_config(
    server: str,
    *,
    source: Mapping[str, str] | None = None,
    node_id: str = DEFAULT_NODE_ID,
    zone: str = "",
    cacert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """The bootstrap of a client of the control plane at ``server`` (``host:port``).

    ``source`` are the caller's labels (``{"service": "app", "version": "v2"}``) that route
    ``match.source`` tests; ``zone`` is the client's locality (grpc-js requires one).
    ``ignore_resource_deletion`` keeps a client's last resources if the control plane ever
    forgets them, instead of failing its calls. ``cacert`` (and ``cert`` + ``key`` for mutual
    TLS) reach a control plane that serves TLS (see :func:`channel_creds`).
    """
    parse_address(server)
    if not node_id:
        raise ValueError("node_id must not be empty")
    creds = channel_creds(cacert, cert, key)
    node: dict[str, Any] = {
        "id": node_id,
        "cluster": "grpc-etcd",
        "locality": {"zone": zone},
        "metadata": {SOURCE_KEY: dict(source or {})},
    }
    return {
        "xds_servers": [
            {
                "server_uri": server,
                "channel_creds": creds,
                "server_features": ["xds_v3", "ignore_resource_deletion"],
            }
        ],
        "node": node,
    }


def bootstrap_json(server: str, **kwargs: Any) -> str:
    """:func:`bootstrap_config` as JSON text."""
    return json.dumps(bootstrap_config(server, **kwargs), indent=2)


def parse_labels(text: str) -> dict[str, str]:
    """``"version=v2,zone=a"`` -> ``{"version": "v2", "zone": "a"}``; ValueError on a bad part."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"label {part!r} must be key=value")
        labels[key.strip()] = value.strip()
    return labels


def source_of(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The caller's labels from a client's ``node.metadata`` (as a plain mapping)."""
    raw = metadata.get(SOURCE_KEY)
    if not isinstance(raw, Mapping):
        return {}
    return {str(key): str(value) for key, value in raw.items()}
