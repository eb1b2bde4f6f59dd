#!/usr/bin/env bash
# Generates the Java code for the job-worker API (protoc's java_out and Debian's grpc-java plugin)
# and compiles the worker offline with javac against the jars Debian installs in /usr/share/java
# (libgrpc-java, libprotobuf-java, libgoogle-common-protos-java, libnetty-java, ...). No Maven, no
# Gradle, no downloads.
# Usage: build.sh [OUT_DIR]  (default: examples/workers/java/build) builds OUT_DIR/worker.jar, to run
#                            with `java -jar OUT_DIR/worker.jar` (its manifest names the jars), and
#                            prints its path. A jar built from the same inputs (sources, protos,
#                            jars, tools) is kept as it is: OUT_DIR/inputs.sha256 records them.
#        build.sh --check    only checks that the jars and tools it needs are installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$here/build}"
jars=/usr/share/java
grpc_java_plugin="${GRPC_JAVA_PLUGIN:-/usr/bin/grpc_java_plugin}"

# What the worker needs at run time: grpc-java with its Netty transport, protobuf-java, the
# google.rpc protos (RetryInfo) and their dependencies.
runtime=(
  grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
  protobuf proto-google-common-protos guava perfmark-api gson
  netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
  netty-handler netty-handler-proxy netty-resolver netty-transport netty-tcnative
)
# TLS: gRPC needs ALPN, and Debian's Netty has dropped its glue for the JDK's own ALPN, so TLS goes
# through Netty's OpenSSL provider: netty-tcnative and its JNI library. Debian installs that as
# libnetty-tcnative.so; Netty looks for libnetty_tcnative.so, and the library checks its own file
# name, so the jar carries a copy under that name (META-INF/native/, where Netty looks first).
tcnative_jni="$(dpkg -L libnetty-tcnative-jni 2>/dev/null | grep '/libnetty-tcnative\.so$' | head -1 || true)"
# Only for compiling: javax.annotation.Generated (named by the generated stub) and the annotations
# grpc-java's classes carry.
compile_only=(geronimo-annotation-1.3-spec jsr305 error_prone_annotations)

runtime_paths=("${runtime[@]/#/$jars/}")
runtime_paths=("${runtime_paths[@]/%/.jar}")
compile_paths=("${compile_only[@]/#/$jars/}")
compile_paths=("${compile_paths[@]/%/.jar}")

missing=()
for jar in "${runtime_paths[@]}" "${compile_paths[@]}"; do
  [[ -f "$jar" ]] || missing+=("$jar")
done
for tool in protoc javac jar; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x "$grpc_java_plugin" ]] || missing+=("$grpc_java_plugin")
[[ -n "$tcnative_jni" && -f "$tcnative_jni" ]] || missing+=("libnetty-tcnative.so (libnetty-tcnative-jni)")
if ((${#missing[@]})); then
  echo "java worker build: missing ${missing[*]}: run scripts/install-worker-tools.sh" >&2
  exit 1
fi
[[ "$out" != --check ]] || exit 0

# Everything the jar is made from: this script, the sources, the protos, the jars (by the versioned
# files their links point at) and the tools' versions.
inputs_hash() {
  {
    cat "${BASH_SOURCE[0]}"
    find "$here/src" "$repo/proto" "$repo/proto-deps" \( -name '*.java' -o -name '*.proto' \) -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
    readlink -f "${runtime_paths[@]}" "${compile_paths[@]}" "$tcnative_jni"
    sha256sum "$grpc_java_plugin"
    protoc --version
    javac -version 2>&1
  } | sha256sum | cut -d' ' -f1
}
wanted="$(inputs_hash)"
if [[ -f "$out/worker.jar" && "$(cat "$out/inputs.sha256" 2>/dev/null)" == "$wanted" ]]; then
  echo "$out/worker.jar"
  exit 0
fi

# Built in a scratch directory, then moved into place: a build that fails, or one running beside
# another, never leaves a half-made jar behind.
mkdir -p "$out"
work="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gen" "$work/classes/META-INF/native"

# proto-deps/ holds the google.rpc protos the API imports; their Java classes come from Debian's
# proto-google-common-protos jar, so only the job-worker proto is generated.
protoc -I "$repo/proto" -I "$repo/proto-deps" --java_out="$work/gen" \
  --plugin=protoc-gen-grpc-java="$grpc_java_plugin" --grpc-java_out="$work/gen" \
  codepipeline/jobworker/v1/job_worker.proto

# One javac run for the generated code and the worker, with every lint on. The only warnings are
# javac's mandatory ones about sun.misc.Signal ("internal proprietary API", which no option or
# annotation silences): the JDK's only way to handle SIGTERM without exiting 143. javac on C1 alone
# takes about half the time and CPU that it does with C2 for a one-off compile like this.
classpath="$(IFS=:; echo "${runtime_paths[*]}:${compile_paths[*]}")"
find "$work/gen" "$here/src" -name '*.java' >"$work/sources.txt"
javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC --release 17 -encoding UTF-8 \
  -Xlint:all,-processing -proc:none -cp "$classpath" -d "$work/classes" @"$work/sources.txt"

cp "$tcnative_jni" "$work/classes/META-INF/native/libnetty_tcnative.so"

# The manifest's Class-Path names the run-time jars by absolute path, so `java -jar` needs no -cp
# (manifest lines are at most 72 bytes; a continuation line starts with a space).
{
  echo "Main-Class: com.example.codepipeline.worker.Worker"
  echo "Class-Path: ${runtime_paths[*]}" | fold -w 70 | sed '2,$s/^/ /'
} >"$work/manifest.txt"
jar --create --file "$work/worker.jar" --manifest "$work/manifest.txt" -C "$work/classes" .

rm -rf "$out/gen"
mv "$work/gen" "$out/gen" # the generated code, for reading and for IDEs
mv -f "$work/worker.jar" "$out/worker.jar"
echo "$wanted" >"$out/inputs.sha256"
echo "$out/worker.jar"
