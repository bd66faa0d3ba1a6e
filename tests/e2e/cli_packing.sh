#!/usr/bin/env bash
# data.packing (data/packing.h): on a datamix of images (thumb+tile), multi-image, video, text-only and region
# samples, 10 fp32 steps with packing: samples give the unpacked run's per-step losses and weights within 1e-5
# relative, on 1 rank and on 2 Gloo ranks (full_shard); runs with packing: samples and packing: tokens killed with
# SIGKILL resume to bit-identical weights and optimizer state; packing: tokens fills its micro-batches, refuses to
# resume on another number of ranks and to run without global_tokens, each with one sentence; the metrics report
# the packing; `plm data check` and `plm data preview` show it.
# Usage: tests/e2e/cli_packing.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
cd "$tmp"
"$PLM" data make-demo --out demo --scale 0.03 > /dev/null || { echo "FAIL: make-demo"; exit 1; }
# The demo's stage 3 (every kind of sample) from scratch, 10 steps of 2 micro-batches of 8 samples in rows of 512
# (2-3 samples a row; unpacked, a row of 512 per sample, as the reference pads), the loss normalised over the step's tokens so that 2 ranks x 4 samples equal 1 rank x 8.
common=(data.registry="$tmp/demo/datasets.yaml" data.tokenizer_path="$tmp/demo/tokenizer.model"
        model.max_seqlen=512 checkpoint.init_ckpt_path=null steps=10 grad_acc_steps=2 optim.warmup=2 optim.loss_normalization=global_tokens
        logging.freq=1 checkpoint.dump.every=5 checkpoint.dump.keep=0 data.num_workers=1 data.pad_to_longest=false)
run() {
  local name=$1 n=$2; shift 2
  if ! "$PLM" launch --nproc-per-node "$n" "$ROOT/recipes/demo/stage3.yaml" dump_dir="$tmp/$name" "${common[@]}" \
      data.batch_size=$((8 / n)) "$@" > "$name.log" 2>&1; then
    fail "$name did not finish"; tail -20 "$name.log"
  fi
}
run plain 1
run packed 1 data.packing=samples
run plain2 2 distributed.fsdp_type=full_shard
run packed2 2 data.packing=samples distributed.fsdp_type=full_shard
for name in plain2 packed2; do
  "$PLM" consolidate $name/checkpoints/0000000010 > /dev/null 2>&1 || fail "plm consolidate of $name"
done

"$PY" - "$tmp" <<'PY' || fail "packed runs differ from the unpacked one"
import json, sys
import numpy as np
from safetensors.numpy import load_file
d = sys.argv[1]
def records(name):
    return [json.loads(l) for l in open(f"{d}/{name}/metrics.jsonl")]
def losses(name):
    return {r["global_step"]: r["loss/token_mean"] for r in records(name) if r.get("loss/token_mean") is not None}
for name, ref, weights in (("packed", "plain", "model.safetensors"), ("packed2", "plain2", "consolidated.safetensors")):
    plain = losses(ref)
    assert sorted(plain) == list(range(1, 11)), sorted(plain)
    base = load_file(f"{d}/{ref}/checkpoints/0000000010/{weights}")
    other = losses(name)
    worst = max(abs(other[s] - plain[s]) / abs(plain[s]) for s in plain)
    w = load_file(f"{d}/{name}/checkpoints/0000000010/{weights}")
    # All weights together: the norm of the difference over the norm of the unpacked run's weights. Per tensor
    # the relative figure is ill-conditioned where a gradient is zero in exact arithmetic (a key bias in PE's
    # in_proj: AdamW turns its rounding noise into updates of ~1e-7 on a tensor of norm ~1e-2), so per element
    # the bound is absolute.
    assert set(w) == set(base), sorted(set(base) ^ set(w))
    wrel = np.sqrt(sum(float(np.sum((w[k].astype(np.float64) - base[k]) ** 2)) for k in w)
                   / sum(float(np.sum(base[k].astype(np.float64) ** 2)) for k in w))
    wabs = max(float(np.abs(w[k] - base[k]).max()) for k in w)
    print(f"{name} vs {ref} over 10 steps: max relative loss difference {worst:.2e}, weights {wrel:.2e} relative, "
          f"{wabs:.2e} at most per element (tolerance 1e-5); losses {plain[1]:.5f} -> {plain[10]:.5f}")
    assert worst <= 1e-5 and wrel <= 1e-5 and wabs <= 1e-5, (name, worst, wrel, wabs)
# The packing is real and reported: fewer rows than samples, and the padding it removes.
p = [r for r in records("packed") if "data/samples_per_row" in r]
u = [r for r in records("plain") if "data/samples_per_row" in r]
assert p and u and all(r["data/samples_per_row"] >= 2 for r in p), [r["data/samples_per_row"] for r in p]
assert all(r["data/samples_per_row"] == 1 for r in u), [r["data/samples_per_row"] for r in u]
pe = np.mean([r["data/packing_efficiency"] for r in p]); ue = np.mean([r["data/packing_efficiency"] for r in u])
assert 0 < ue < pe <= 1, (ue, pe)
print(f"packing efficiency {ue:.3f} unpacked -> {pe:.3f} packed, "
      f"{np.mean([r['data/samples_per_row'] for r in p]):.2f} samples per row")
PY
grep -q "packed attention (cpu Float head size 16): causal attention over length buckets" packed.log ||
  fail "the packed run did not log its attention path"

# SIGKILL after the step-5 checkpoint, inside a later step, then resume: bit-identical to the uninterrupted run, with
# packing: samples (vs the run above) and packing: tokens (micro-batches of up to 3 rows of 512).
tokens=(data.packing=tokens data.batch_size=3)
"$PLM" train "$ROOT/recipes/demo/stage3.yaml" dump_dir=tokens "${common[@]}" "${tokens[@]}" > tokens.log 2>&1 ||
  fail "the packing: tokens run exited $?: $(tail -2 tokens.log)"
kill_and_resume() {  # name, reference run, then overrides
  local name=$1 ref=$2; shift 2
  "$PLM" train "$ROOT/recipes/demo/stage3.yaml" dump_dir=$name "${common[@]}" "$@" > ${name}1.log 2>&1 &
  local pid=$!
  wait_for $pid test -f $name/checkpoints/0000000005/manifest.json
  wait_for $pid grep -q "step 6/10" ${name}1.log
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  [ -f $name/checkpoints/0000000010/manifest.json ] && fail "$name finished before it was killed (the test proves nothing)"
  "$PLM" train "$ROOT/recipes/demo/stage3.yaml" dump_dir=$name "${common[@]}" "$@" > ${name}2.log 2>&1 ||
    fail "the resumed $name exited $?: $(tail -2 ${name}2.log)"
  grep -q "resumed from .*0000000005 at step 5" ${name}2.log || fail "$name did not resume from step 5"
  for f in model optimizer; do
    cmp -s $ref/checkpoints/0000000010/$f.safetensors $name/checkpoints/0000000010/$f.safetensors ||
      fail "$f state after SIGKILL + resume differs from the uninterrupted $ref run"
  done
}
kill_and_resume killed packed data.batch_size=8 data.packing=samples
kill_and_resume killed_tokens tokens "${tokens[@]}"
"$PY" - "$tmp" <<'PY' || fail "packing: tokens did not fill its micro-batches"
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/tokens/metrics.jsonl")]
spr = [r["data/samples_per_row"] for r in rows if r["acc_step"] == 0]
eff = [r["data/packing_efficiency"] for r in rows if r["acc_step"] == 0]
# Micro-batches of 3 rows of 512 hold 2-4 samples a row, a different number from step to step.
assert len(spr) == 10 and min(spr) >= 2 and len(set(spr)) > 1, spr
print(f"packing: tokens: {min(spr):.2f}-{max(spr):.2f} samples per row, efficiency {sum(eff) / len(eff):.3f}")
PY
# packing: tokens on 2 ranks (each its own share of the stream, the run's data state gathered from both): the step-5
# checkpoint resumed on 2 ranks ends with the uninterrupted run's shards, byte for byte.
run tokens2 2 distributed.fsdp_type=full_shard "${tokens[@]}"
mkdir -p tokens2r/checkpoints && cp -r tokens2/checkpoints/0000000005 tokens2r/checkpoints/
run tokens2r 2 distributed.fsdp_type=full_shard "${tokens[@]}"
grep -q "resumed from .*0000000005 at step 5" tokens2r.log || fail "tokens2r did not resume from step 5"
for f in tokens2/checkpoints/0000000010/*.shard-*.safetensors; do
  cmp -s "$f" "tokens2r/checkpoints/0000000010/$(basename "$f")" || fail "$(basename "$f") differs after a 2-rank resume"
done
# packing: tokens resumes only on its own number of ranks, and needs global_tokens: one sentence each.
"$PLM" launch --nproc-per-node 2 "$ROOT/recipes/demo/stage3.yaml" dump_dir="$tmp/tokens" "${common[@]}" \
  "${tokens[@]}" steps=12 > tokens_2ranks.log 2>&1 && fail "a 1-rank packing: tokens checkpoint resumed on 2 ranks"
grep -q "tokens/checkpoints/0000000010/train_state.json: its data position comes from a data.packing=tokens run on 1 rank and this run has 2 ranks" \
  tokens_2ranks.log || fail "resuming packing: tokens on other ranks: $(grep -m1 -i "error\|rank" tokens_2ranks.log)"
"$PLM" config validate "$ROOT/recipes/demo/stage3.yaml" data.packing=tokens > tokens_norm.err 2>&1 &&
  fail "packing: tokens with loss_normalization reference was accepted"
grep -q "data.packing.*needs optim.loss_normalization: global_tokens" tokens_norm.err ||
  fail "packing: tokens without global_tokens: $(cat tokens_norm.err)"

# Before training: plm data check says what packing would give, plm data preview shows packed rows.
"$PLM" data check "$ROOT/recipes/demo/stage3.yaml" "${common[@]:0:3}" data.batch_size=8 --json > check.json 2> check.err ||
  fail "plm data check: $(tail -2 check.err)"
"$PY" - check.json <<'PY' || fail "plm data check's packing report"
import json, sys
p = json.load(open(sys.argv[1]))["packing"]
assert p["batch_size"] == 8 and p["row_tokens"] == 512, p
assert 0 < p["none"]["efficiency"] < p["samples"]["efficiency"] <= 1, p
assert p["samples"]["rows"] < p["none"]["rows"] == p["micro_batches"] * 8, p
assert p["tokens"]["samples_per_micro_batch"] > 8 and p["tokens"]["efficiency"] >= p["samples"]["efficiency"], p
print(f"plm data check: packing {p['none']['efficiency']:.3f} -> {p['samples']['efficiency']:.3f}, "
      f"{p['samples']['samples_per_row']:.2f} samples per row")
PY
"$PLM" data preview "$ROOT/recipes/demo/stage3.yaml" "${common[@]:0:3}" data.batch_size=8 data.packing=samples \
  --n 8 > preview.txt 2>&1 || fail "plm data preview with packing"
grep -q "^--- row [0-9]: [2-9] packed sample(s)" preview.txt || fail "plm data preview does not show a packed row: $(head -3 preview.txt)"
finish cli_packing
