#!/usr/bin/env bash
# LoRA against full fine-tuning at PLM-1B's shapes on this CPU (not a test): trainable parameters, the rank's
# parameter + gradient + AdamW bytes as the trainer reports them, peak RSS (/usr/bin/time) and seconds a step, for
# a few fp32 steps (one 448-px tile and up to 512 tokens a sample, batch 1, full activation checkpointing) on 48
# toy pictures. Full fine-tuning of all of PLM-1B needs ~25 GB for fp32 parameters, gradients and AdamW state alone,
# more than a 24 GiB machine has, so both modes run at PLM-1B's widths with fewer blocks (DEPTH decoder layers and
# vision blocks, default 4), LoRA also with adapter dropout 0.1 (its keyed masks' cost) and at the full depth (16
# decoder layers, 23 vision blocks).
# Usage: bench/lora_memory.sh [steps, default 2]     (OUT=folder keeps the runs; DEPTH=n)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-2}"
DEPTH="${DEPTH:-4}"
OUT="${OUT:-/tmp/plm_lora_memory}"
PLM=build/plm
[ -x "$PLM" ] || scripts/build.sh > /dev/null
mkdir -p "$OUT"
PY=.venv/bin/python
source tests/e2e/lib.sh
[ -f "$OUT/datasets.yaml" ] || make_toy_data "$OUT"
cat > "$OUT/recipe.yaml" <<YAML
include: $PWD/configs/models/plm_1b.yaml
steps: $STEPS
logging: {freq: 1}
checkpoint: {dump: {every: 100000}}
distributed: {model_dtype: fp32, full_activation_checkpointing: true}
model: {max_seqlen: 512}
optim: {lr: 1e-4, warmup: 1}
data:
  datamix: toy:1
  registry: $OUT/datasets.yaml
  tokenizer_path: $PWD/tests/fixtures/llama3/tokenizer.model
  batch_size: 1
  num_workers: 1
  image_res: 448
  max_num_tiles: 1
  vision_input_type: vanilla
  conversation_format: plm_sft
YAML
LORA=(model.lora.rank=16 model.lora.alpha=32 model.lora.targets=all)
SHALLOW=(model.n_layers=$DEPTH model.vision_model.layers=$DEPTH)
run() {  # name, overrides...
  local name=$1; shift
  rm -rf "$OUT/$name"
  /usr/bin/time -v "$PLM" train "$OUT/recipe.yaml" dump_dir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  "$PY" - "$OUT/$name" "$OUT/$name.log" "$name" <<'PY'
import json, re, sys
run, log, name = sys.argv[1:]
text = open(log).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 2**20
trainable = re.search(r"model parameters: (\d+) total, (\d+) trainable", text)
held = re.search(r"holds (\d+) bytes of master parameters, (\d+) of gradients, (\d+) of optimizer state", text)
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
step = rows[-1]["speed/step_time"] if rows else float("nan")
p, g, o = (int(x) / 2**30 for x in held.groups())
print(f"{name:<24} trainable {int(trainable.group(2)):>13,} of {int(trainable.group(1)):>13,}  "
      f"params {p:6.2f} + grads {g:5.2f} + AdamW {o:5.2f} GiB  peak RSS {rss:6.2f} GiB  {step:6.1f} s/step")
PY
}
echo "PLM-1B widths, fp32, $STEPS steps, $(nproc) cores"
run "full_depth$DEPTH" "${SHALLOW[@]}"
run "lora_depth$DEPTH" "${SHALLOW[@]}" "${LORA[@]}"
run "lora_depth${DEPTH}_dropout0.1" "${SHALLOW[@]}" "${LORA[@]}" model.lora.dropout=0.1
run "lora_full_depth" "${LORA[@]}"
