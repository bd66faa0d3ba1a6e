#!/usr/bin/env bash
# Causal attention over packed rows on the CPU: length buckets (ops::packed_attention) vs one call per sequence vs one
# block-diagonal mask vs unpacked rows (bench/packed_attention_bench.cpp), forward + backward.
# Usage: bench/packed_attention_bench.sh [HEADS KV_HEADS HEAD_DIM ROW_LEN SAMPLE_LEN SAMPLES [REPEATS]]
#   default: the demo model's attention (4 heads of 16) in rows of 256 with 32 samples of ~100 and of ~45 tokens
#   (stage 2 and stage 1 of the demo); then PLM-1B's (32 heads, 8 kv heads of 64) at stage 1's rows of 1,280 with 8
#   samples of ~400 tokens and 16 of ~150.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target packed_attention_bench >/dev/null
if [ $# -gt 0 ]; then
  build/bench/packed_attention_bench "$@"
else
  build/bench/packed_attention_bench 4 4 16 256 100 32 20
  build/bench/packed_attention_bench 4 4 16 256 45 32 20
  build/bench/packed_attention_bench 32 8 64 1280 400 8 3
  build/bench/packed_attention_bench 32 8 64 1280 150 16 3
fi
