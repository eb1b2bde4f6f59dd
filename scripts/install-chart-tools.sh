#!/usr/bin/env bash
# Installs what the chart checks (tests/chart) need into the test venv, .tools/venv:
#   helm-python-sdk      Helm v4 as a shared library (lint, render, values.schema.json checks);
#                        no helm binary is downloaded or needed
#   kubernetes-validate  offline JSON schemas of the Kubernetes API, to validate rendered objects
#   cryptography         throwaway CA and certificates for the TLS/mTLS drift checks
#   PyYAML               reads rendered manifests and the value files
# Runs scripts/install-test-tools.sh first (it creates the venv, pytest and grpcio).
# Idempotent: a stamp records the pinned versions, and a second run with the same pins and
# importable packages does nothing. Everything comes from PyPI through pip.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHART_PINS=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  cryptography==50.0.2
  PyYAML==6.0.4
  # The tracing drift checks' OTLP receiver (the TraceService of the OTLP protos).
  opentelemetry-proto==1.45.2
)

VENV="$PWD/.tools/venv"
STAMP="$PWD/.tools/chart-tools.stamp"
wanted_stamp="python=${CHART_PINS[*]}"

bash scripts/install-test-tools.sh

tools_work() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import helm_python, kubernetes_validate, cryptography, yaml  # noqa: F401
import opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc  # noqa: F401
helm_python.helm_sdk_version()
PY
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted_stamp" ]] && tools_work; then
  echo "chart tools already installed (.tools/venv)"
  exit 0
fi

echo "installing chart tools into .tools/venv"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${CHART_PINS[@]}"

if ! tools_work; then
  echo "install-chart-tools: the chart tools do not import or load as expected" >&2
  "$VENV/bin/python" -c 'import helm_python; print(helm_python.helm_sdk_version())' >&2 || true
  exit 1
fi
echo "$wanted_stamp" >"$STAMP"
echo "chart tools ready: helm SDK $("$VENV/bin/python" -c \
  'import helm_python; print(helm_python.helm_sdk_version())'), kubernetes-validate $(
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"
