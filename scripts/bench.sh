#!/usr/bin/env bash
# The benchmark harness: builds in release mode and prints a table of throughput, added latency,
# Python worker CPU, memory and start-up, each beside a baseline measured in the same run.
#   bash scripts/bench.sh            the full run (several minutes)
#   bash scripts/bench.sh --smoke    every part for a few seconds: checks the harness works
# Needs h2load and redis-server (Debian's, installed here if missing) and the Python test venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-system-packages.sh
bash scripts/install-test-tools.sh

cargo build --release --locked --bin codepipeline-gateway --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench" --gateway "$target_dir/release/codepipeline-gateway" "$@"
