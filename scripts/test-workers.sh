#!/usr/bin/env bash
# The polyglot-worker suites (tests/workers): the example workers in Python, Go, Node and Java
# sharing one job pool behind the gateway, polling, streaming (StreamJobs) and both at once, each
# worker's retry / drop / credit / reopen / token / TLS / SIGTERM behaviour in both modes, each
# worker's artifacts through the gateway's ArtifactService (inputs read, outputs written and read
# back, store 503s retried, no AWS SDK among its dependencies), grpcurl, buf curl and grpcio
# conformance with error details, the proto contract (buf lint, buf breaking against
# proto-released/), the Python worker as a third-party worker; and OpenTelemetry end to end
# (tests/traces: the traced Python worker and the gateway exporting to a real OTLP receiver;
# scripts/test-traces.sh runs that suite alone). Installs what it needs first; runs the debug
# binary (GATEWAY_BIN overrides it), so `cargo build` must have run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-worker-tools.sh

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/workers tests/traces
