#!/usr/bin/env bash
# Generation speed on this machine with random weights: the tiny model and the 1B decoder, fp32 and bf16,
# batch 1 and 4, a 64-token prompt and 32 new tokens (greedy, KV cache).
# Usage: BUILD_DIR=build bench/generate_bench.sh [PROMPT_LEN] [GEN_LEN]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
prompt_len="${1:-64}"
gen_len="${2:-32}"
cmake -S . -B "$BUILD_DIR" -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build "$BUILD_DIR" --target generate_bench >/dev/null
TOK=tests/fixtures/llama3/tokenizer.model
for model in configs/models/tiny.yaml configs/models/plm_1b.yaml; do
  for dtype in fp32 bf16; do
    for batch in 1 4; do
      "$BUILD_DIR/bench/generate_bench" "$model" "$TOK" "$dtype" "$batch" "$prompt_len" "$gen_len"
    done
  done
done
