#!/usr/bin/env bash
# The bad-input corpus (tests/corpus/): hostile and malformed calls against the real gateway
# binary, each of which must be refused with the exact gRPC code, reach no upstream and leave the
# gateway SERVING. Needs a built binary: target/debug/codepipeline-gateway (under
# CARGO_TARGET_DIR when set), or the one GATEWAY_BIN names. Installs its tools into .tools/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-corpus-tools.sh

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/corpus "$@"
