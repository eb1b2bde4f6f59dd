#!/usr/bin/env bash
# Installs what the bad-input corpus (tests/corpus/) needs on top of scripts/install-test-tools.sh
# (run first: the .tools/venv Python venv with grpcio, grpcio-tools and pytest):
#   .tools/venv   h2, hpack, hyperframe: raw HTTP/2 frames, for the cases that send what no gRPC
#                 client would (a wrong content-type)
# Idempotent: a stamp records the pins, and a second run with working tools does nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON_PINS=(
  h2==4.4.1
  hpack==4.2.0
  hyperframe==6.1.0
)

TOOLS="$PWD/.tools"
VENV="$TOOLS/venv"
STAMP="$TOOLS/corpus-installed.stamp"
wanted_stamp="python=${PYTHON_PINS[*]}"

bash scripts/install-test-tools.sh

tools_work() {
  "$VENV/bin/python" -c 'import h2.connection, hpack, hyperframe, grpc, grpc_tools, pytest' 2>/dev/null
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted_stamp" ]] && tools_work; then
  echo "corpus tools already installed"
  exit 0
fi

echo "installing the corpus's Python tools into .tools/venv"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_PINS[@]}"

if ! tools_work; then
  echo "install-corpus-tools: h2, hpack or hyperframe does not import after installing" >&2
  exit 1
fi
echo "$wanted_stamp" >"$STAMP"
echo "corpus tools ready: ${PYTHON_PINS[*]}"
