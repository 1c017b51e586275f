"""An unmodified grpcio client, driven over stdin/stdout by the xDS tests (one per process,
since gRPC reads the xDS bootstrap once per process).

It knows nothing of grpc-etcd: it dials ``xds:///<service>`` with ``GRPC_XDS_BOOTSTRAP_CONFIG``
set by the test. Each stdin line is a JSON command
``{"target": "xds:///svc", "calls": 20, "metadata": [["x-version", "v1"]], "timeout": 2}``;
the answer is one JSON line ``{"answers": {"<server>": n}, "errors": {"<CODE>: <details>": n}}``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import grpc

METHOD = "/proto.Api/ApiTest"
_channels: dict[str, grpc.Channel] = {}


def _request(text: str) -> bytes:
    data = text.encode()
    return b"\n" + bytes([len(data)]) + data  # Request{input=1: string}, short inputs only


def _output(data: bytes) -> str:
    return data[2:].decode() if data else ""  # Response{output=1: string}, short outputs only


def run(command: dict[str, Any]) -> dict[str, Any]:
    target = command["target"]
    channel = _channels.get(target)
    if channel is None:
        channel = _channels[target] = grpc.insecure_channel(target)
    call = channel.unary_unary(METHOD)
    answers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    metadata = [tuple(pair) for pair in command.get("metadata", [])]
    for _ in range(int(command.get("calls", 1))):
        try:
            response = call(
                _request("hi"),
                metadata=metadata,
                timeout=float(command.get("timeout", 2.0)),
                wait_for_ready=bool(command.get("wait_for_ready", False)),
            )
            answers[_output(response).split("|")[0]] += 1
        except grpc.RpcError as exc:
            errors[f"{exc.code().name}: {exc.details()}"] += 1
    return {"answers": dict(answers), "errors": dict(errors)}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
