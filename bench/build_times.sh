#!/usr/bin/env bash
# Measures the clean Release build time (ccache off, a fresh build folder) and the one-file
# incremental rebuild time (touch one libplm source, rebuild everything that depends on it).
# Usage: bench/build_times.sh [source-to-touch]   (default: src/plm/config/load.cpp)
set -euo pipefail
cd "$(dirname "$0")/.."
touched="${1:-src/plm/config/load.cpp}"
dir="$(mktemp -d /tmp/plm-build-bench.XXXX)"; trap 'rm -rf "$dir"' EXIT
export CCACHE_DISABLE=1
start=$(date +%s.%N)
BUILD_DIR="$dir" scripts/build.sh >/dev/null
clean=$(echo "$(date +%s.%N) - $start" | bc)
touch "$touched"
start=$(date +%s.%N)
BUILD_DIR="$dir" scripts/build.sh >/dev/null
incremental=$(echo "$(date +%s.%N) - $start" | bc)
printf 'cores: %s\nclean build (no ccache): %.1f s\nincremental after touching %s: %.1f s\n' \
  "$(nproc)" "$clean" "$touched" "$incremental"
