#!/usr/bin/env bash
# Image preprocessing throughput, plm vs PLM's Python path (Pillow + torchvision), same JPEGs, one thread each:
# decode + thumb+tile (36 tiles of 448) per image. Generates 20 photo-like JPEGs (1920x1080 and 4000x3000)
# unless a folder of .jpg files is given.
# Usage: BUILD_DIR=build bench/image_bench.sh [JPEG_DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
photos="${1:-}"
repeats="${2:-3}"
if [ -z "$photos" ]; then
  photos="$(mktemp -d /tmp/plm-img-bench.XXXX)"; trap 'rm -rf "$photos"' EXIT
  .venv/bin/python bench/image_bench.py gen "$photos" 20
fi
cmake -S . -B "$BUILD_DIR" -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build "$BUILD_DIR" --target image_bench >/dev/null
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
plm_line="$("$BUILD_DIR/bench/image_bench" "$photos" "$repeats")"
ref_line="$(.venv/bin/python bench/image_bench.py run "$photos" "$repeats")"
echo "$plm_line"; echo "$ref_line"
plm_rate="$(echo "$plm_line" | awk '{print $8}')"; ref_rate="$(echo "$ref_line" | awk '{print $8}')"
[ "$(echo "$plm_line" | awk '{print $4}')" = "$(echo "$ref_line" | awk '{print $4}')" ] \
  || echo "WARNING: chunk counts differ"
echo "throughput ratio plm/python: $(echo "scale=2; $plm_rate / $ref_rate" | bc)"
