"""``python -m grpc_etcd.cli`` runs the ``grpc-etcd`` command."""

from . import main

main()
