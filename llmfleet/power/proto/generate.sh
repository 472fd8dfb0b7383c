#!/usr/bin/env bash
# Regenerate the Python modules of the kubelet PodResources v1 API from podresources_v1.proto with
# grpcio-tools (the test extra). Run from anywhere; writes podresources_v1_pb2.py and
# podresources_v1_pb2_grpc.py next to the .proto. The include root is the repository root, so the
# generated gRPC module imports its messages as `llmfleet.power.proto.podresources_v1_pb2` (a
# package import) rather than a bare top-level module name.
# tests/test_podresources.py regenerates into a temporary folder and compares with the committed files.
#   Usage: llmfleet/power/proto/generate.sh [OUTPUT_ROOT]   (default: the repository root)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$repo}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
cd "$repo"
"$python" -m grpc_tools.protoc -I . --python_out="$out" --grpc_python_out="$out" \
    llmfleet/power/proto/podresources_v1.proto
