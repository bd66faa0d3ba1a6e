#!/usr/bin/env bash
# One AdamW step, plm's fused AdamW vs torch::optim::AdamW, on the CPU (bench/adamw_bench.cpp).
# Usage: bench/adamw_bench.sh [hidden size, default 2048] [matrices, default 12]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target adamw_bench >/dev/null
build/bench/adamw_bench "$@"
