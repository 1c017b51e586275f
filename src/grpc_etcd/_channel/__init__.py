"""Client-side balancing: a grpc channel over the nodes of one service (gRPC I/O, and the
pure decisions of one call: ``_flow.py``, ``_call.py``).

``_sync.BalancedChannel`` is a ``grpc.Channel``, ``_aio.BalancedChannel`` a ``grpc.aio.Channel``;
both are fed node sets with ``update(snapshot)`` and know nothing of etcd. Users reach them as
``grpc_etcd.BalancedChannel`` and ``grpc_etcd.aio.BalancedChannel``.
"""
