#!/usr/bin/env bash
# Installs what the example workers (examples/workers/) and their tests (tests/workers/,
# tests/traces/) need:
#   Debian packages  Go 1.19, grpc-go, golang/protobuf 1.5, genproto (errdetails), protoc with
#                    protoc-gen-go and protoc-gen-go-grpc: for the Go worker only (GOPATH mode,
#                    offline). The Rust build never needs protoc.
#                    A JDK, grpc-java 1.41 with Netty (and netty-tcnative, for TLS), protobuf-java,
#                    the google.rpc protos for Java and the grpc-java protoc plugin: for the Java
#                    worker (javac against the jars in /usr/share/java, offline).
#   .tools/venv      grpcio-status (RetryInfo from a failed call); the OpenTelemetry SDK, OTLP/gRPC
#                    exporter and grpc instrumentation the Python worker imports when
#                    OTEL_EXPORTER_OTLP_ENDPOINT is set, and opentelemetry-proto for the OTLP
#                    receiver of tests/traces; on top of what scripts/install-test-tools.sh installs
#                    (run first: grpcio, grpcio-tools, googleapis-common-protos, pytest, grpcurl, buf)
#   .tools/node      @grpc/grpc-js, @grpc/proto-loader, protobufjs and google-proto-files
# Idempotent: a stamp records the pins, and a second run with working tools does nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
  golang-go
  golang-google-grpc-dev
  golang-github-golang-protobuf-1-5-dev
  golang-google-genproto-dev
  protoc-gen-go
  protoc-gen-go-grpc
  protobuf-compiler
  libprotobuf-dev
  default-jdk-headless
  libgrpc-java
  protobuf-compiler-grpc-java-plugin
  libprotobuf-java
  libgoogle-common-protos-java
  libguava-java
  libnetty-java
  libnetty-tcnative-java
  libperfmark-java
  libgoogle-gson-java
  libgeronimo-annotation-1.3-spec-java
  libjsr305-java
  liberror-prone-java
)
PYTHON_PINS=(
  grpcio-status==1.85.3
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-exporter-otlp-proto-grpc==1.45.2
  opentelemetry-proto==1.45.2
  opentelemetry-instrumentation-grpc==0.66b2
)
NODE_PINS=(
  @grpc/grpc-js@1.14.7
  @grpc/proto-loader@0.8.1
  protobufjs@7.6.6
  google-proto-files@6.0.1
)

TOOLS="$PWD/.tools"
VENV="$TOOLS/venv"
NODE_PREFIX="$TOOLS/node"
STAMP="$TOOLS/workers-installed.stamp"
wanted_stamp="apt=${APT_PACKAGES[*]} python=${PYTHON_PINS[*]} node=${NODE_PINS[*]}"

bash scripts/install-test-tools.sh

tools_work() {
  command -v go >/dev/null && command -v protoc >/dev/null &&
    command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null &&
    [[ -d /usr/share/gocode/src/google.golang.org/grpc && -d /usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails ]] &&
    command -v java >/dev/null && command -v javac >/dev/null && command -v jar >/dev/null &&
    bash examples/workers/java/build.sh --check 2>/dev/null &&
    "$VENV/bin/python" -c 'import grpc_status, google.rpc.error_details_pb2' 2>/dev/null &&
    "$VENV/bin/python" -c 'import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.instrumentation.grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' 2>/dev/null &&
    (cd "$NODE_PREFIX" && node -e 'for (const m of ["@grpc/grpc-js", "@grpc/proto-loader", "protobufjs", "google-proto-files"]) require.resolve(m)') 2>/dev/null
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted_stamp" ]] && tools_work; then
  echo "worker tools already installed"
  exit 0
fi

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "installing Python gRPC status and OpenTelemetry packages into .tools/venv"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_PINS[@]}"

echo "installing Node gRPC packages into .tools/node"
mkdir -p "$NODE_PREFIX"
npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error --save-exact \
  "${NODE_PINS[@]}" >/dev/null

if ! tools_work; then
  echo "install-worker-tools: the installed tools do not work as expected" >&2
  exit 1
fi
echo "$wanted_stamp" >"$STAMP"
echo "worker tools ready: $(go version), $(protoc --version), node $(node --version), $(javac -version 2>&1)"
