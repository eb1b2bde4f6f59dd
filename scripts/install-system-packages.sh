#!/usr/bin/env bash
# Installs the Debian packages the tests and the benchmark run for real: redis-server (the Redis
# rate-limit backend's tests start their own on a free port; nothing runs as a service) and
# h2load from nghttp2-client (the benchmark harness). Idempotent: installed packages are skipped.
set -euo pipefail

packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
command -v h2load >/dev/null || packages+=(nghttp2-client)
if ((${#packages[@]} == 0)); then
  echo "system packages already installed"
  exit 0
fi
sudo=()
[[ "$(id -u)" == 0 ]] || sudo=(sudo)
echo "installing Debian packages: ${packages[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  "${packages[@]}" >/dev/null
# Debian's package may start a redis-server service where an init system runs: the tests start
# their own, on their own ports, and need none.
echo "system packages ready: $(redis-server --version | cut -d' ' -f3), $(h2load --version | head -n 1)"
