"""A client that calls the v1 servers of hwholiday.srv.app (sync). Copy and adapt.

python examples/sync_client.py --etcd 127.0.0.1:2379 --version v1
"""

from __future__ import annotations

import argparse

import grpc

import grpc_etcd
from grpc_etcd.demo import api_pb2, api_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", default="127.0.0.1:2379")
    parser.add_argument("--version", default="v1")
    args = parser.parse_args()

    with grpc_etcd.Registry(args.etcd) as registry:
        channel = registry.channel("hwholiday.srv.app", policy="version")
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        try:
            with grpc_etcd.route(version=args.version):
                reply = stub.ApiTest(api_pb2.Request(input="hello"), timeout=5)
            print(reply.output)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}")  # e.g. UNAVAILABLE: no match found conn


if __name__ == "__main__":
    main()
