#!/usr/bin/env bash
# Generates the Go gRPC code for the job-worker API (protoc-gen-go, protoc-gen-go-grpc) and builds
# the worker offline in GOPATH mode against Debian's Go packages (/usr/share/gocode).
# Usage: build.sh [OUT_DIR]   (default: .tools/workers/go; the binary is OUT_DIR/worker)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/.tools/workers/go}"
gopath="$out/gopath"
mkdir -p "$gopath/src"
protoc -I "$repo/proto" -I "$repo/proto-deps" --go_out="$gopath/src" --go-grpc_out="$gopath/src" \
  codepipeline/jobworker/v1/job_worker.proto
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS=
export GOCACHE="${GOCACHE:-$out/cache}"
go build -o "$out/worker" "$here/main.go"
echo "$out/worker"
