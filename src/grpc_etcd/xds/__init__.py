"""An xDS control plane fed by etcd: unmodified gRPC clients in any language route by version.

    plane = grpc_etcd.xds.ControlPlane(registry, listen="127.0.0.1:18000")   # asyncio
    async with plane: await plane.wait_closed()

    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = grpc_etcd.xds.bootstrap_json("127.0.0.1:18000")
    channel = grpc.insecure_channel("xds:///hwholiday.srv.app")               # any client

The control plane and the translation need the ``xds`` extra (``pip install 'grpc-etcd[xds]'``);
they are imported on first use, so the bootstrap helpers work without it. See docs/xds.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .bootstrap import SOURCE_KEY, bootstrap_config, bootstrap_json, parse_labels

if TYPE_CHECKING:
    from ._plane import ControlPlane
    from .translate import ServiceState, Translation

__all__ = [
    "SOURCE_KEY",
    "ControlPlane",
    "ServiceState",
    "Translation",
    "bootstrap_config",
    "bootstrap_json",
    "parse_labels",
]

_LAZY = {"ControlPlane": "._plane", "ServiceState": ".translate", "Translation": ".translate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
