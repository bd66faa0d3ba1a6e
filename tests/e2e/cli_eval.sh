#!/usr/bin/env bash
# `plm eval` end to end: a small demo dataset, a tiny model trained 2 steps with training-time validation
# (data.val_datamix -> metrics.jsonl "eval/loss"), consolidated, then evaluated on the test split of every task.
# Usage: tests/e2e/cli_eval.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"

"$PLM" data make-demo --out "$tmp/demo" --scale 0.02 > "$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; fail "make-demo"; }

"$PLM" train recipes/demo/stage3.yaml dump_dir="$tmp/run" steps=2 data.batch_size=4 logging.freq=1 \
  data.registry="$tmp/demo/datasets.yaml" data.tokenizer_path="$tmp/demo/tokenizer.model" \
  checkpoint.init_ckpt_path=null checkpoint.is_consolidated_model=false checkpoint.eval.every=1 \
  data.val_datamix=demo_colour_mcq_val:1,demo_addition_val:1 data.val_max_batches=2 \
  > "$tmp/train.log" 2>&1 || { tail -20 "$tmp/train.log"; fail "plm train"; }
grep -c '"eval/loss"' "$tmp/run/metrics.jsonl" 2>/dev/null | grep -qx 2 \
  || fail "metrics.jsonl should hold eval/loss at steps 1 and 2"
grep -q '"eval/loss/demo_addition_val"' "$tmp/run/metrics.jsonl" 2>/dev/null || fail "no per-dataset eval loss"

step="$tmp/run/checkpoints/0000000002"
"$PLM" consolidate "$step" > /dev/null 2>&1 || fail "plm consolidate"

data=()
for f in "$tmp"/demo/test/*.jsonl; do data+=(--data "$f"); done
"$PLM" eval --ckpt "$step" "${data[@]}" --media-root "$tmp/demo" --max-samples 2 --batch-size 8 --max-gen-len 8 \
  --loss --out "$tmp/results.json" --predictions "$tmp/preds.jsonl" > "$tmp/eval.out" 2> "$tmp/eval.err" \
  || { cat "$tmp/eval.err"; fail "plm eval"; }
grep -q "samples/s" "$tmp/eval.out" || fail "no samples/s line"
grep -q "multi_image_mcq" "$tmp/eval.out" || fail "no results table"
[ "$(wc -l < "$tmp/preds.jsonl" 2>/dev/null)" = 26 ] || fail "predictions: expected 26 lines (13 tasks x 2)"
"$PY" - "$tmp/results.json" "$tmp/demo/tasks.json" <<'PY' || fail "results.json"
import json, sys
results = json.load(open(sys.argv[1]))
tasks = json.load(open(sys.argv[2]))["tasks"]
names = tasks.keys() if isinstance(tasks, dict) else [t["name"] for t in tasks]
for name in names:
    assert name in results, f"task {name} missing"
    r = results[name]
    assert r["num_instances"] == 2, (name, r)
    for k, v in r.items():
        if k not in ("num_instances", "parse_failures"):
            assert 0.0 <= v <= 1.0, (name, k, v)
assert results["colour_mcq"].keys() >= {"accuracy"}
assert results["rtloc"].keys() >= {"mean_recall"}
assert results["caption"].keys() >= {"token_f1"}
assert results["count_short"].keys() >= {"exact_match"}
v = results["validation_loss"]
assert v["loss"] > 0 and v["tokens"] > 0, v
assert results["eval_settings"]["decoding"] == "greedy"
PY

# log-likelihood multiple choice never fails to parse.
"$PLM" eval --ckpt "$step" --data "$tmp/demo/test/colour_mcq.jsonl" --media-root "$tmp/demo" --max-samples 3 \
  --mcq-scoring loglik --out "$tmp/loglik.json" > /dev/null 2>&1 || fail "plm eval --mcq-scoring loglik"
"$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))['colour_mcq']; assert r['parse_failures']==0, r" \
  "$tmp/loglik.json" || fail "loglik parse failures"

# User errors: one sentence, exit 2.
"$PLM" eval --ckpt "$step" --data "$tmp/demo/test/caption.jsonl" > /dev/null 2> "$tmp/err.txt"
rc=$?
[ $rc = 2 ] || fail "missing media: exit $rc, expected 2"
grep -q "caption/test" "$tmp/err.txt" || fail "missing media error should name the file: $(cat "$tmp/err.txt")"
"$PLM" eval --ckpt "$step" > /dev/null 2> "$tmp/err.txt"
[ $? = 2 ] && grep -q -- "--data" "$tmp/err.txt" || fail "no --data: $(cat "$tmp/err.txt")"

finish cli_eval
