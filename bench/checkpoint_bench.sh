#!/usr/bin/env bash
# Checkpoint save and verify throughput on a 1 GiB model (bench/checkpoint_bench.cpp). PLM_BENCH_DIR=/path picks the
# disk to measure (default: the system's temporary folder).
# Usage: bench/checkpoint_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target checkpoint_bench >/dev/null
build/bench/checkpoint_bench
