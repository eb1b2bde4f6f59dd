#!/usr/bin/env bash
# The one test command: every suite of the project, in order, stopping at the first failure.
#   1. the test tools (.tools/: Python venv, grpcurl, buf) and Debian's redis-server and h2load
#   2. cargo build (the client suites run the debug binary)
#   3. cargo test --workspace (Rust unit and integration tests; the Redis ones start a real redis-server)
#   4. buf lint (the .proto files)
#   5. pytest tests/clients (boto3 and the JavaScript SDK v3 against the emulator, both protocols;
#      grpcurl and buf curl against the gateway)
#   6. Python, Go, Node and Java workers on one job pool, client conformance, buf breaking
#      (scripts/test-workers.sh)
#   7. the bad-input corpus against the real binary (scripts/test-corpus.sh)
#   8. hostile HTTP/2 against the real binary (scripts/test-edge.sh)
#   9. the Helm chart checks (scripts/test-chart.sh)
#  10. a seconds-long smoke run of the benchmark harness (examples/bench), asserting no timing
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() {
  printf '\n==== %s ====\n' "$*"
}

section "install test tools"
bash scripts/install-test-tools.sh
bash scripts/install-system-packages.sh

section "cargo build --locked"
cargo build --locked

section "cargo test --workspace --locked"
cargo test --workspace --locked

section "buf lint"
.tools/bin/buf lint
echo "buf lint: clean"

section "client tests (pytest tests/clients)"
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/clients

section "polyglot workers and client conformance (tests/workers)"
bash scripts/test-workers.sh

section "bad-input corpus against the real binary (tests/corpus)"
bash scripts/test-corpus.sh

section "hostile HTTP/2 against the real binary (tests/edge)"
bash scripts/test-edge.sh

section "chart tests (helm lint, render, schema, drift)"
bash scripts/test-chart.sh

section "benchmark harness smoke run (no timing asserted)"
cargo build --locked --example bench
"$target_dir/debug/examples/bench" --smoke --gateway "$target_dir/debug/codepipeline-gateway"

section "all suites passed"
