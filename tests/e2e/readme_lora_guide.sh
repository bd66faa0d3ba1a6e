#!/usr/bin/env bash
# The README's LoRA guide (the block between <!-- guide:lora --> and <!-- /guide:lora -->) runs as written on the
# tiny demo model: its first lines (the variables a user sets) are replaced by a released-PLM-style folder of the
# demo model (`plm export --plm` of a short run), the demo's video QA data and a few steps; every command after
# them runs unchanged from the repository root, and what they promise exists: the evaluation's results, the merged
# release folder, the HF export, the PEFT adapter, and transformers + PEFT agreeing with the merged export.
# Usage: tests/e2e/readme_lora_guide.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
"$PLM" data make-demo --out "$tmp/demo" --scale 0.03 > /dev/null 2>&1 || { echo "FAIL: make-demo"; exit 1; }
DEMO=(data.registry=$tmp/demo/datasets.yaml data.tokenizer_path=$tmp/demo/tokenizer.model)
"$PLM" train recipes/demo/stage3.yaml "${DEMO[@]}" checkpoint.init_ckpt_path=null steps=4 dump_dir=$tmp/base \
  > "$tmp/base.log" 2>&1 || { tail -3 "$tmp/base.log"; fail "base run"; }
"$PLM" export --plm "$tmp/released" "$tmp/base/checkpoints/0000000004" > /dev/null 2>&1 || fail "release folder"

# The guide's block, its variable lines replaced.
awk '/<!-- guide:lora -->/{on=1; next} /<!-- \/guide:lora -->/{on=0} on' README.md | sed '/^```/d' > "$tmp/guide.sh"
grep -q '^STEPS=' "$tmp/guide.sh" || fail "the README has no guide block with its variables"
{
  echo "set -euo pipefail"
  echo "PLM_DIR=$tmp/released RECIPE=recipes/demo/stage3.yaml REGISTRY=$tmp/demo/datasets.yaml"
  echo "TRAIN=demo_count_video_train TEST=$tmp/demo/test/count_video.jsonl MEDIA=$tmp/demo RUN=$tmp/run STEPS=6"
  sed -n '/^STEPS=/,$p' "$tmp/guide.sh" | sed '1d'
} > "$tmp/run_guide.sh"
# The block calls build/plm: when the binary under test is another one, call that instead.
[ "$PLM" = "$(readlink -f build/plm 2>/dev/null)" ] || sed -i "s#build/plm #\"$PLM\" #g" "$tmp/run_guide.sh"
bash "$tmp/run_guide.sh" > "$tmp/guide.out" 2>&1 || { tail -5 "$tmp/guide.out"; fail "the guide's commands"; }
for f in run/results.json run/merged/consolidated.pth run/hf/config.json run/base_hf/config.json \
         run/adapter/adapter_config.json run/adapter/adapter_model.safetensors; do
  [ -s "$tmp/$f" ] || fail "the guide did not write $f"
done
ls -d "$tmp"/run/checkpoints/[0-9]*/lora_base.json > /dev/null 2>&1 || fail "the guide's run is not a LoRA run"
diff=$(sed -n 's/^merged vs base + adapter: max |difference| = //p' "$tmp/guide.out")
"$PY" -c "import sys; sys.exit(0 if float('$diff') < 1e-3 else 1)" 2>/dev/null || fail "merged vs PEFT: '$diff'"
grep -q "^greedy continuation: \[" "$tmp/guide.out" || fail "no continuation from transformers' generate"
finish readme_lora_guide
