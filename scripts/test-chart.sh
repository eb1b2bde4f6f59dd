#!/usr/bin/env bash
# The Helm chart checks (tests/chart): installs the chart tools into .tools/venv (Helm v4 through
# helm-python-sdk, kubernetes-validate, cryptography) and opentelemetry-proto, then runs pytest on
# tests/chart:
#   - helm lint --strict, with the defaults and every value set in tests/chart/values/
#   - render every value set and validate each object against the Kubernetes API schemas
#   - values.schema.json rejects wrong types, unknown keys and bad enum values
#   - the chart README is generated from values.yaml; every value is documented
#   - no drift: each rendered gateway container is started as a process with the real binary
#     (target/debug/codepipeline-gateway, or GATEWAY_BIN) and must serve health on the probed port;
#     the Redis value sets run against a real redis-server (Debian's, started by the checks on free
#     ports) and must report the shared rate limits up, shared by two pods; the third-party value
#     set must load its client-token Secret, reload it when it changes, and supply its tokens to
#     third-party calls against the emulator's AWS front; the tracing value set must export its
#     calls to an OTLP/gRPC receiver the checks start (the TraceService of opentelemetry-proto):
#     server and client spans with the service name and resource attributes the chart set, the
#     sampling ratio holding and a caller's sampled flag followed
#   - the Dockerfile agrees with the chart (entrypoint, ports, user)
#   - the Grafana dashboard (dashboards/ in the chart, shipped by dashboards.enabled): its layout
#     and variables, and, against a gateway started from the chart and called a few times, every
#     metric and label its panels' PromQL names is on /metrics
# Extra arguments go to pytest (e.g. -k drift).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-chart-tools.sh
# The Redis value sets' drift checks start Debian's redis-server (nothing runs as a service).
command -v redis-server >/dev/null || bash scripts/install-system-packages.sh

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/chart "$@"
