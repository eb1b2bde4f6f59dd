#!/usr/bin/env bash
# Generates the Python gRPC code for the job-worker API with grpcio-tools.
# Usage: build.sh [OUT_DIR]   (default: .tools/workers/python; put OUT_DIR on PYTHONPATH)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="${1:-$repo/.tools/workers/python}"
python="${PYTHON:-$repo/.tools/venv/bin/python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$repo/proto" -I "$repo/proto-deps" --python_out="$out" --grpc_python_out="$out" \
  codepipeline/jobworker/v1/job_worker.proto
echo "$out"
