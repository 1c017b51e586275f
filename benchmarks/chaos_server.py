"""One echo server in its own process, registered in etcd and run by ``grpc_etcd.serve``.

    python benchmarks/chaos_server.py --etcd 127.0.0.1:2379 --name a [--fail] [--hang]

Used by ``chaos.py`` and by the tests that signal or kill a real server. It answers
``/proto.Api/ApiTest`` with ``name|x-version|input`` (and ``/test.Echo/UnaryStream`` with three
such answers); an input ``sleep:0.5`` holds the call for that long. ``--fail`` aborts every
call (UNAVAILABLE), ``--hang`` never answers. When it is registered it prints
``ready <address> <key>``; on SIGTERM it drains and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

import grpc_etcd
from grpc_etcd.demo import api_pb2, api_pb2_grpc

SERVICE = "test.srv.echo"
HANG_LIMIT = 600.0  # a hung call still ends, so the process can always stop


class Echo(api_pb2_grpc.ApiServicer):
    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode
        self.hung = threading.Event()

    def ApiTest(self, request: api_pb2.Request, context: grpc.ServicerContext) -> api_pb2.Response:
        if self.mode == "fail":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} fails every call")
        if self.mode == "hang":
            self.hung.wait(HANG_LIMIT)
        if request.input.startswith("sleep:"):
            # One write per line (print writes the newline apart): calls print from many threads.
            sys.stdout.write(f"begin {request.input}\n")  # the tests wait for it
            sys.stdout.flush()
            time.sleep(float(request.input.split(":", 1)[1]))
        version = dict(context.invocation_metadata()).get("x-version", "")
        return api_pb2.Response(output=f"{self.name}|{version}|{request.input}")


def _stream_handler(echo: Echo) -> grpc.GenericRpcHandler:
    def unary_stream(request: api_pb2.Request, context: grpc.ServicerContext) -> Iterator[Any]:
        first = echo.ApiTest(request, context)
        for i in range(3):
            yield api_pb2.Response(output=f"{first.output}{i}")

    handler = grpc.unary_stream_rpc_method_handler(
        unary_stream,
        request_deserializer=api_pb2.Request.FromString,
        response_serializer=api_pb2.Response.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("test.Echo", {"UnaryStream": handler})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--service", default=SERVICE)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--drain-delay", type=float, default=1.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fail", action="store_const", dest="mode", const="fail", default="ok")
    mode.add_argument("--hang", action="store_const", dest="mode", const="hang")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    # No SO_REUSEPORT: a restart on a given --port must fail loudly if anything still listens
    # there, not share the port with it (grpc turns the option on by default).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64), options=[("grpc.so_reuseport", 0)]
    )
    echo = Echo(args.name, args.mode)
    api_pb2_grpc.add_ApiServicer_to_server(echo, server)  # type: ignore[no-untyped-call]
    server.add_generic_rpc_handlers([_stream_handler(echo)])
    address = f"127.0.0.1:{server.add_insecure_port(f'127.0.0.1:{args.port}')}"
    server.start()
    with grpc_etcd.Registry(args.etcd) as registry:
        registration = registry.register(
            args.service, address=address, version=args.version, ttl=args.ttl, instance_id=args.name
        )
        print(f"ready {address} {registration.key}", flush=True)
        grpc_etcd.serve(
            server, registration, grace=args.grace, drain_delay=args.drain_delay, health=True
        )
    print("drained", flush=True)


if __name__ == "__main__":
    main()
