#!/usr/bin/env bash
# The benchmark harness: builds in release mode and prints a table of throughput, added latency,
# Python worker CPU, memory and start-up, each beside a baseline measured in the same run.
#   bash scripts/bench.sh            the full run (several minutes)
#   bash scripts/bench.sh --smoke    every part for a few seconds: checks the harness works
# Needs h2load (Debian's nghttp2-client, installed here if missing) and the Python test venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v h2load >/dev/null; then
  echo "installing h2load (nghttp2-client)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
fi
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
bash scripts/install-test-tools.sh

cargo build --release --locked --bin codepipeline-gateway --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench" --gateway "$target_dir/release/codepipeline-gateway" "$@"
