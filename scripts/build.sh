#!/usr/bin/env bash
# Release build into build/ (binary: build/plm). Extra arguments go to CMake's configure step,
# e.g. scripts/build.sh -DPLM_CUDA=ON or -DCMAKE_PREFIX_PATH=/path/to/libtorch. PLM_BUILD_TARGET=plm builds only
# the binary (no tests).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
# ccache must not reject the precompiled header.
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
# Paths under the checkout are hashed relative to it, so a second clone (CI's fresh clone) reuses the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
generator=()
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$BUILD_DIR" --parallel "${PLM_BUILD_JOBS:-$(nproc)}" ${PLM_BUILD_TARGET:+--target "$PLM_BUILD_TARGET"}
