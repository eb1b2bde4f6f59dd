#!/usr/bin/env bash
# The HTTP/2 edge suite (tests/edge): attacks sent as raw HTTP/2 frames (the `h2` state machine
# over a socket, or frames built by hand) against the real binary: MadeYouReset, rapid reset,
# bodiless streams, preface-less connections, the connection limit, a client whose window stays
# 0, CONTINUATION / SETTINGS / PING floods and malformed authorization. Each test asserts that
# the abusive connection is ended, that the gateway's RSS stays bounded, and that a legitimate
# grpcio client is served throughout. Installs what it needs first; runs the debug binary
# (GATEWAY_BIN overrides it), so `cargo build` must have run. Extra arguments go to pytest
# (e.g. --durations=0, -k rapid).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-tools.sh

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
# Every test bounds its own attack; the outer limit only stops a run that hangs regardless.
GATEWAY_BIN="${GATEWAY_BIN:-$target_dir/debug/codepipeline-gateway}" \
  timeout --kill-after=10 300 \
  .tools/venv/bin/python -m pytest -q -p no:cacheprovider tests/edge "$@"
