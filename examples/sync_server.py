"""A gRPC server that registers itself in etcd (sync). Copy and adapt.

python examples/sync_server.py --etcd 127.0.0.1:2379 --version v1
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc

import grpc_etcd
from grpc_etcd.demo import api_pb2, api_pb2_grpc


class Api(api_pb2_grpc.ApiServicer):
    def __init__(self, version: str) -> None:
        self.version = version

    def ApiTest(self, request: api_pb2.Request, context: grpc.ServicerContext) -> api_pb2.Response:
        return api_pb2.Response(output=f"{request.input} from {self.version}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd", default="127.0.0.1:2379")
    parser.add_argument("--version", default="v1")
    args = parser.parse_args()

    # propagate_route(): handlers run inside route(version=<caller's x-version>), so the calls
    # they make through a BalancedChannel go to the same version.
    server = grpc.server(futures.ThreadPoolExecutor(8), interceptors=[grpc_etcd.propagate_route()])
    api_pb2_grpc.add_ApiServicer_to_server(Api(args.version), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    with grpc_etcd.Registry(args.etcd) as registry:
        registration = registry.register(
            "hwholiday.srv.app",
            address=f"127.0.0.1:{port}",
            version=args.version,
            methods=["ApiTest"],
        )
        print(f"registered {registration.key} -> 127.0.0.1:{port}", flush=True)
        # Until SIGTERM/Ctrl-C; then NOT_SERVING, deregister, give clients a second to see
        # it, and let the calls in flight finish: a deploy loses no call.
        grpc_etcd.serve(server, registration, grace=5, health=True)


if __name__ == "__main__":
    main()
