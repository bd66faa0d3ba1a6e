#!/usr/bin/env bash
# `plm data check|preview` end to end on a small generated dataset (images, a video, text, broken rows), and a
# 30,000-frame video ranked first by predicted decode cost, named before it is decoded, skipped by policy.
# Usage: tests/e2e/cli_data.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"

cd "$tmp"
mkdir media
"$PY" -c "
from PIL import Image; import numpy as np
r = np.random.default_rng(1)
for i in range(3): Image.fromarray(r.integers(0, 255, (50 + 10 * i, 70, 3), dtype=np.uint8)).save(f'media/img{i}.jpg')
" || fail "could not make images"
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=64x48:rate=8:duration=2 -pix_fmt yuv420p media/clip.mp4 || fail "ffmpeg"
cat > train.jsonl <<'JSONL'
{"image": "img0.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "assistant", "value": "Noise."}]}
{"image": ["img1.jpg", "img2.jpg"], "conversations": [{"from": "human", "value": "<image> or <image>?"}, {"from": "assistant", "value": "Both."}]}
{"video": "clip.mp4", "conversations": [{"from": "human", "value": "Describe."}, {"from": "assistant", "value": "Colour bars."}]}
{"video": "clip.mp4", "bbox_map": {"0": [1, 1, 20, 20], "8": null, "x": [1, 1, 5, 5]}, "conversations": [{"from": "human", "value": "What is boxed?"}, {"from": "assistant", "value": "A bar."}]}
{"text": "A caption without any image."}
{"image": "nowhere.jpg", "text": "missing"}
{broken json
JSONL
cat > datasets.yaml <<YAML
demo:
  annotation: $tmp/train.jsonl
  root_dir: $tmp/media
YAML
cat > recipe.yaml <<YAML
include: $ROOT/configs/models/tiny.yaml
name: data_e2e
dump_dir: $tmp/dump
model:
  pooling_ratio: 1
data:
  datamix: demo:1
  registry: $tmp/datasets.yaml
  tokenizer_path: $ROOT/tests/fixtures/llama3/tokenizer.model
  batch_size: 4
  num_workers: 2
  image_res: 28
  max_num_tiles: 4
  vision_input_type: thumb+tile
  max_video_frames: 4
  conversation_format: plm_sft
YAML
sed -i 's/image_size: 56/image_size: 28/' recipe.yaml

out="$("$PLM" data check recipe.yaml model.vision_model.image_size=28 --json)" || fail "data check exited $?"
"$PY" - "$out" <<'PYCHECK' || fail "data check report: $out"
import json, sys
d = json.loads(sys.argv[1])["datasets"]["demo"]
assert d["rows"] == 7 and d["usable"] == 5, d  # the region video with a null box and a key "x" is usable
assert d["notes"] == {"bbox_map_entries_ignored": 2}, d
assert d["skipped"] == {"bad_json": 1, "missing_file": 1}, d
assert 0 < d["loss_token_share"] < 1, d
PYCHECK
text="$("$PLM" data check recipe.yaml model.vision_model.image_size=28 2>/dev/null)" || fail "text report failed"
grep -q "note: 2 bbox_map entries left out" <<<"$text" || fail "the text report does not note the left-out boxes: $text"
out="$("$PLM" data preview recipe.yaml model.vision_model.image_size=28 --n 4 --dump first.safetensors 2>/dev/null)" ||
  fail "data preview exited $?"
grep -q '\[\[' <<<"$out" || fail "preview does not mark loss spans: $out"
grep -q '<|image|>x' <<<"$out" || fail "preview does not shorten image runs: $out"
"$PY" -c "
from safetensors import safe_open
with safe_open('first.safetensors', 'pt') as f:
    keys = set(f.keys()); meta = f.metadata()
    assert {'input_ids', 'labels', 'loss_mask', 'image_pos_index', 'pixel_values', 'num_chunks'} <= keys, keys
    assert f.get_tensor('input_ids').shape[0] == 4
    assert len(meta['media_type'].split(',')) == 4, meta
" || fail "the dumped batch is incomplete"
# A 30,000-frame video with one keyframe beside a short one: data check ranks it first by predicted decode cost and
# names it in the log before decoding it (data.max_video_decode_frames); with data.long_video_policy: skip it is
# skipped as too_long.
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=32x32:rate=30 -frames:v 30000 -c:v libx264 -preset ultrafast \
  -x264-params keyint=100000:min-keyint=100000:scenecut=0 -pix_fmt yuv420p media/long.mp4 || fail "ffmpeg long"
cat > long.jsonl <<'JSONL'
{"video": "clip.mp4", "conversations": [{"from": "human", "value": "Describe."}, {"from": "assistant", "value": "Bars."}]}
{"video": "long.mp4", "conversations": [{"from": "human", "value": "Describe."}, {"from": "assistant", "value": "Long."}]}
JSONL
cat >> datasets.yaml <<YAML
long:
  annotation: $tmp/long.jsonl
  root_dir: $tmp/media
YAML
LONG=(model.vision_model.image_size=28 data.datamix=long:1)
out="$("$PLM" data check recipe.yaml "${LONG[@]}" --json 2> long.log)" || fail "data check of the long video: $out"
"$PY" - "$out" <<'PYCHECK' || fail "slowest videos: $out"
import json, sys
r = json.loads(sys.argv[1])
first = r["slowest_videos"][0]
assert first["file"].endswith("long.mp4") and first["frames"] == 30000, r["slowest_videos"]
assert first["frames_decoded"] > 10000, first  # one keyframe: every frame up to the last one sampled
assert len(r["slowest_videos"]) == 2 and r["slowest_videos"][1]["frames_decoded"] < first["frames_decoded"]
assert r["datasets"]["long"]["usable"] == 2, r["datasets"]
PYCHECK
grep -q "long.mp4' needs [0-9]* frames decoded to sample 4 (a 30000-frame video.*over data.max_video_decode_frames = 10000" \
  long.log || fail "the long video is not named in the log: $(tail -2 long.log)"
out="$("$PLM" data check recipe.yaml "${LONG[@]}" data.long_video_policy=skip --json 2>/dev/null)" ||
  fail "data check with the skip policy"
"$PY" -c "import json, sys; d = json.loads(sys.argv[1])['datasets']['long']; assert d['skipped'] == {'too_long': 1} and d['usable'] == 1, d" \
  "$out" || fail "the skip policy did not skip the long video: $out"
text="$("$PLM" data check recipe.yaml "${LONG[@]}" 2>/dev/null)" || fail "text report of the long video"
grep -A1 "slowest videos by predicted decode cost" <<<"$text" | grep -q "1\. .*long.mp4" ||
  fail "the text report does not rank the long video first: $text"

# Training on it: the log names the long video before its first decode, and metrics.jsonl counts the videos read
# and the frames their reads decoded (the long one's plan included).
"$PLM" train recipe.yaml "${LONG[@]}" steps=2 logging.freq=1 data.batch_size=2 data.num_workers=1 \
  dump_dir="$tmp/long_run" > long_train.log 2>&1 || fail "training on the long video: $(tail -2 long_train.log)"
grep -q "long.mp4' needs [0-9]* frames decoded.*decoding it now" long_train.log ||
  fail "the training log does not name the long video: $(grep -c . long_train.log) lines"
"$PY" - "$tmp/long_run/metrics.jsonl" <<'PYCHECK' || fail "loader metrics"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2, rows
videos = sum(r["data/videos_read"] for r in rows)
frames = sum(r["data/video_frames_decoded"] for r in rows)
samples = sum(r["data/samples_preprocessed"] for r in rows)
assert samples >= 4 and videos == samples, (samples, videos)  # every sample of this datamix is a video
assert frames > 10000, frames  # the long video's read was among them
assert all(r["data/preprocess_worker_s"] > 0 for r in rows if r["data/samples_preprocessed"]), rows
PYCHECK

# a missing annotation file is fatal (exit non-zero), naming it
sed -i "s|$tmp/train.jsonl|$tmp/absent.jsonl|" datasets.yaml
err="$("$PLM" data check recipe.yaml model.vision_model.image_size=28 2>&1 >/dev/null)" && fail "a missing annotation passed"
grep -q "absent.jsonl" <<<"$err" || fail "the missing annotation is not named: $err"

finish cli_data
