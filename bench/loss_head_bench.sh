#!/usr/bin/env bash
# Peak memory and time of the loss head, plain vs chunked linear + cross-entropy (bench/loss_head_bench.cpp).
# Usage: bench/loss_head_bench.sh [loss tokens, default 4096] [hidden size, default 256]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target loss_head_bench >/dev/null
build/bench/loss_head_bench "$@"
