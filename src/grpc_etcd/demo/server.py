"""The seed's demo server: ``/proto.Api/ApiTest`` registered in etcd with a version.

    python -m grpc_etcd.demo.server --etcd 127.0.0.1:2379 --version v1 [--port 0] [--ttl 10]

It answers with ``<version>@<address>``, so a client can see which server it reached. On
SIGTERM or Ctrl-C it deregisters first (key deleted, lease revoked), then drains its calls.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent import futures

import grpc

from .. import _serve
from .._registry import Registry
from ..server import propagate_route
from . import api_pb2, api_pb2_grpc

SERVICE = "hwholiday.srv.app"
DRAIN_SECONDS = 2.0


class Api(api_pb2_grpc.ApiServicer):
    """Answers ApiTest with ``<version>@<address>``: who answered."""

    def __init__(self, version: str, address: str) -> None:
        self.version = version
        self.address = address

    def ApiTest(self, request: api_pb2.Request, context: grpc.ServicerContext) -> api_pb2.Response:
        return api_pb2.Response(output=f"{self.version}@{self.address}")


def serve(etcd: str, version: str, port: int, ttl: int, service: str = SERVICE) -> None:
    """Run one demo server until SIGTERM/SIGINT."""
    # No SO_REUSEPORT (grpc's default turns it on): a --port already in use must fail, not
    # silently share its calls with whatever listens there.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[propagate_route()],
        options=[("grpc.so_reuseport", 0)],
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    address = f"127.0.0.1:{bound}"
    api_pb2_grpc.add_ApiServicer_to_server(Api(version, address), server)  # type: ignore[no-untyped-call]
    server.start()
    with Registry(etcd) as registry:
        registration = registry.register(
            service, address=address, version=version, ttl=ttl, methods=["ApiTest"]
        )
        print(f"serving {service} {version} on {address} as {registration.key}", flush=True)
        # Clients stop picking us (key deleted) before we stop answering.
        _serve.serve(server, registration, grace=DRAIN_SECONDS, health=True)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--etcd", default="127.0.0.1:2379")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--service", default=SERVICE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(args.etcd, args.version, args.port, args.ttl, args.service)


if __name__ == "__main__":
    main()
