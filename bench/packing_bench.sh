#!/usr/bin/env bash
# data.packing on this machine (not a test): training samples/s of the demo's stage-1 and stage-2 recipes (from
# scratch, fp32, the recipes' own batch and rows) with rows as the reference pads them (one sample per row of
# model.max_seqlen), padded to the longest sample (the demo recipes' data.pad_to_longest), packed (data.packing:
# samples) and filled to data.batch_size rows (data.packing: tokens, so more samples a step); then the
# packing efficiency (the samples' share of row tokens) that PLM-1B's stage 1/2/3 shapes (448-px tiles, rows of
# 1,280 / 6,144 / 11,520, their batch sizes) would get on the demo's datamix of each stage, from `plm data check`.
# Usage: bench/packing_bench.sh [steps per run, default 40]     (OUT=folder keeps the data and runs; default /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-40}"
OUT="${OUT:-/tmp/plm_packing_bench}"
PLM=build/plm
[ -x "$PLM" ] || scripts/build.sh > /dev/null
mkdir -p "$OUT"
[ -f "$OUT/demo/datasets.yaml" ] || "$PLM" data make-demo --out "$OUT/demo" > /dev/null 2>&1
data=(data.registry="$OUT/demo/datasets.yaml" data.tokenizer_path="$OUT/demo/tokenizer.model")
echo "training samples/s on $(nproc) cores, $STEPS steps per run (median over logging windows after the first)"
for stage in 1 2; do
  for layout in "reference:data.packing=none data.pad_to_longest=false" \
                "pad_to_longest:data.packing=none data.pad_to_longest=true" \
                "packed:data.packing=samples data.pad_to_longest=false" \
                "tokens:data.packing=tokens data.pad_to_longest=false optim.loss_normalization=global_tokens"; do
    name="${layout%%:*}"
    rm -rf "$OUT/stage${stage}_$name"
    # shellcheck disable=SC2086
    "$PLM" train "recipes/demo/stage$stage.yaml" "${data[@]}" checkpoint.init_ckpt_path=null steps="$STEPS" \
      dump_dir="$OUT/stage${stage}_$name" logging.freq=5 checkpoint.dump.every=100000 ${layout#*:} \
      > "$OUT/stage${stage}_$name.log" 2>&1
    .venv/bin/python - "$OUT/stage${stage}_$name/metrics.jsonl" "stage $stage" "$name" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
sps = statistics.median(r["speed/samples_per_s"] for r in rows)
eff = statistics.mean(r["data/packing_efficiency"] for r in rows)
spr = statistics.mean(r["data/samples_per_row"] for r in rows)
print(f"  {sys.argv[2]} {sys.argv[3]:>15}: {sps:7.1f} samples/s, packing efficiency {eff:.3f}, {spr:.2f} samples/row")
PY
  done
done
echo "packing efficiency of PLM-1B's shapes on the demo datamix (plm data check, 200 rows per dataset)"
mix() { .venv/bin/python -c "import json,sys; print(json.load(open('$OUT/demo/tasks.json'))['datamix']['stage$1'])"; }
for stage in 1 2 3; do
  recipe=$(ls recipes/stage${stage}_*/plm_1b.yaml)
  format=plm_sft; [ "$stage" = 1 ] && format=warmup
  "$PLM" data check "$recipe" "${data[@]}" data.datamix="$(mix $stage)" data.conversation_format=$format \
    --max-samples 200 2> /dev/null | grep '^packing' | sed "s|^|  $recipe: |"
done
