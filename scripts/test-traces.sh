#!/usr/bin/env bash
# OpenTelemetry end to end (tests/traces), alone: the Python worker with tracing on and the
# gateway (`--otlp-endpoint`, on the in-process emulator and on the AWS SDK path) export to a real
# OTLP/gRPC receiver, which must hold one connected trace per job and no secret. Also run by
# scripts/test-workers.sh. Every process listens on port 0, so this may run beside other suites.
# Installs what it needs first; runs the debug binary (GATEWAY_BIN overrides it), so
# `cargo build` must have run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-worker-tools.sh

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/traces
