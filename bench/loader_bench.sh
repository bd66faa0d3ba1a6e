#!/usr/bin/env bash
# Loader throughput with 1 and 2 worker threads on stage-3-like image samples (36 tiles of 448, thumb+tile) made
# from 1920x1080 JPEG photos, and on 32-frame 720p video samples.
# Usage: bench/loader_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
cmake -S . -B build -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build build --target loader_bench >/dev/null
mkdir -p "$tmp/media"
.venv/bin/python - "$tmp" <<'PY'
import json, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
r = np.random.default_rng(0)
with open(f"{root}/images.jsonl", "w") as f:
    for i in range(8):
        y, x = np.mgrid[0:1080, 0:1920]
        img = ((np.sin(x / (7 + i)) + np.cos(y / 11)) * 60 + 128 + r.normal(0, 20, (1080, 1920))).clip(0, 255)
        Image.fromarray(np.stack([img, img[::-1], img[:, ::-1]], -1).astype(np.uint8)).save(f"{root}/media/p{i}.jpg", quality=90)
        f.write(json.dumps({"image": f"p{i}.jpg", "conversations": [{"from": "human", "value": "Describe."},
                                                                    {"from": "assistant", "value": "A pattern."}]}) + "\n")
PY
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30:duration=30 -pix_fmt yuv420p -c:v libx264 -preset veryfast "$tmp/media/v.mp4"
echo '{"video": "v.mp4", "conversations": [{"from": "human", "value": "Describe."}, {"from": "assistant", "value": "Bars."}]}' > "$tmp/videos.jsonl"
for kind in images videos; do
  cat > "$tmp/datasets.yaml" <<YAML
bench: {annotation: $tmp/$kind.jsonl, root_dir: $tmp/media}
YAML
  echo "== $kind"
  for w in 1 2; do
    OMP_NUM_THREADS=1 build/bench/loader_bench recipes/stage3_sft/plm_1b.yaml "$w" 4 data.datamix=bench:1 \
      data.registry="$tmp/datasets.yaml" data.tokenizer_path="$ROOT/tests/fixtures/llama3/tokenizer.model" data.batch_size=4
  done
done
