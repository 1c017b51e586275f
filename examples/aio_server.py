"""A grpc.aio server that registers itself in etcd (asyncio). Copy and adapt.

python examples/aio_server.py --etcd 127.0.0.1:2379 --version v2
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

import grpc_etcd.aio
from grpc_etcd.demo import api_pb2, api_pb2_grpc


class Api(api_pb2_grpc.ApiServicer):
    def __init__(self, version: str) -> None:
        self.version = version

    async def ApiTest(  # type: ignore[override]
        self, request: api_pb2.Request, context: grpc.aio.ServicerContext[object, object]
    ) -> api_pb2.Response:
        return api_pb2.Response(output=f"{request.input} from {self.version}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", default="127.0.0.1:2379")
    parser.add_argument("--version", default="v2")
    args = parser.parse_args()

    server = grpc.aio.server(interceptors=[grpc_etcd.aio.propagate_route()])
    api_pb2_grpc.add_ApiServicer_to_server(Api(args.version), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async with grpc_etcd.aio.Registry(args.etcd) as registry:
        registration = await registry.register(
            "hwholiday.srv.app",
            address=f"127.0.0.1:{port}",
            version=args.version,
            methods=["ApiTest"],
        )
        print(f"registered {registration.key} -> 127.0.0.1:{port}", flush=True)
        # Until SIGTERM/Ctrl-C; then deregister first and drain the calls in flight.
        await grpc_etcd.aio.serve(server, registration, grace=5, health=True)


if __name__ == "__main__":
    asyncio.run(main())
