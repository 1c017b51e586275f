"""A grpc.aio client that calls the servers of one version (asyncio). Copy and adapt.

python examples/aio_client.py --etcd 127.0.0.1:2379 --version v2
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

import grpc_etcd.aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", default="127.0.0.1:2379")
    parser.add_argument("--version", default="v2")
    args = parser.parse_args()

    async with grpc_etcd.aio.Registry(args.etcd) as registry:
        channel = registry.channel("hwholiday.srv.app")  # a grpc.aio.Channel
        stub = api_pb2_grpc.ApiStub(channel)  # type: ignore[no-untyped-call]
        try:
            # Per call, in metadata; grpc_etcd.route(version=...) works here too.
            reply = await stub.ApiTest(
                api_pb2.Request(input="hello"), timeout=5, metadata=[("x-version", args.version)]
            )
            print(reply.output)
        except grpc.aio.AioRpcError as err:
            print(f"{err.code().name}: {err.details()}")


if __name__ == "__main__":
    asyncio.run(main())
