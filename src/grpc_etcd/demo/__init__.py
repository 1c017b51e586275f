"""The seed's demo service (``api.proto``: ``proto.Api/ApiTest``), its server, and the ``make demo``
script (``python -m grpc_etcd.demo``)."""
