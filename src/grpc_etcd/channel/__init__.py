"""Client-side balancing: a grpc channel over every node of one service.

``grpc_etcd.channel.BalancedChannel`` is a ``grpc.Channel``; ``grpc_etcd.channel.aio``'s is a
``grpc.aio.Channel``. Both are fed node sets with ``update(snapshot)``.
"""

from __future__ import annotations

from ._sync import BalancedChannel

__all__ = ["BalancedChannel"]
