#!/usr/bin/env bash
# Regenerate src/grpc_etcd/registry/etcd/_proto/etcd_pb2.py and etcd_pb2.pyi from etcd.proto.
#
# The generator is pinned: grpcio-tools 1.66.2 emits gencode that needs protobuf >= 5.27.2 at run
# time (the floor in pyproject.toml) and runs on protobuf 5, 6 and 7. A newer grpcio-tools would
# silently raise that floor, so do not bump it without bumping pyproject.toml too.
#
# Usage: scripts/gen_etcd_proto.sh            (GT_VENV=/path overrides the tool venv location)
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.66.2"
GT_VENV="${GT_VENV:-/tmp/gt${GRPCIO_TOOLS_VERSION}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="${ROOT}/src/grpc_etcd/registry/etcd/_proto"

if ! "${GT_VENV}/bin/python" -c "import grpc_tools, importlib.metadata as m; \
assert m.version('grpcio-tools') == '${GRPCIO_TOOLS_VERSION}'" 2>/dev/null; then
    echo "creating ${GT_VENV} with grpcio-tools==${GRPCIO_TOOLS_VERSION}" >&2
    rm -rf "${GT_VENV}"
    python3 -m venv "${GT_VENV}"
    "${GT_VENV}/bin/python" -m pip install --quiet "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
fi

# Compile from src/ so the file registers in protobuf's default descriptor pool under the unique
# name "grpc_etcd/registry/etcd/_proto/etcd.proto" (a bare "etcd.proto" could clash with another
# library's file of that name in the same process).
cd "${ROOT}/src"
"${GT_VENV}/bin/python" -m grpc_tools.protoc \
    --proto_path=. \
    --python_out=. \
    --pyi_out=. \
    grpc_etcd/registry/etcd/_proto/etcd.proto

# etcd.proto declares no service, so there is no etcd_pb2_grpc.py to generate.
touch "${PROTO_DIR}/__init__.py"
echo "generated: $(ls "${PROTO_DIR}"/etcd_pb2.py "${PROTO_DIR}"/etcd_pb2.pyi)"
