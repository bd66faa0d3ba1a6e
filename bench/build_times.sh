#!/usr/bin/env bash
# Measures the clean Release build time (ccache off, a fresh build folder, the binary and every test) and, for
# each given source, the incremental rebuild after touching it (everything that depends on it recompiles and
# relinks: with per-module targets, only the test binaries of the modules above it).
# Usage: bench/build_times.sh [source-to-touch ...]
#        (default: src/plm/config/load.cpp src/plm/train/trainer.cpp src/plm/media/image.cpp)
set -euo pipefail
cd "$(dirname "$0")/.."
touched=("$@")
[ ${#touched[@]} -gt 0 ] || touched=(src/plm/config/load.cpp src/plm/train/trainer.cpp src/plm/media/image.cpp)
dir="$(mktemp -d /tmp/plm-build-bench.XXXX)"; trap 'rm -rf "$dir"' EXIT
export CCACHE_DISABLE=1
elapsed() { echo "$(date +%s.%N) - $1" | bc; }
start=$(date +%s.%N)
BUILD_DIR="$dir" scripts/build.sh >/dev/null
printf 'cores: %s\nclean build (no ccache): %.1f s\n' "$(nproc)" "$(elapsed "$start")"
for f in "${touched[@]}"; do
  touch "$f"
  start=$(date +%s.%N)
  steps=$(BUILD_DIR="$dir" scripts/build.sh | grep -c '^\[' || true)
  printf 'incremental after touching %s: %.1f s (%s build steps)\n' "$f" "$(elapsed "$start")" "$steps"
done
