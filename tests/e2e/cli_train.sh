#!/usr/bin/env bash
# `plm train` end to end on a small generated dataset: the loss falls, metrics.jsonl has every key, a run killed
# with SIGKILL (and one stopped by SIGTERM) resumes to bit-identical weights, damaged checkpoints are passed over
# with a reason (and a run over only damaged ones refuses to start), a consolidated checkpoint loads into `plm model
# forward`, every reader of a step folder checks its manifest, and profiling.run writes a Chrome trace of the
# micro-batches its schedule selects.
# Usage: tests/e2e/cli_train.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
cd "$tmp"
make_toy_data "$tmp" || { echo "FAIL: could not make data"; exit 1; }
toy_recipe recipe.yaml 2 2 <<YAML
name: train_e2e
steps: 8
grad_acc_steps: 2
optim: {lr: 0.003, warmup: 2, lr_min_ratio: 0.1}
logging: {freq: 1}
checkpoint: {dump: {every: 2, keep: 0}}
distributed: {model_dtype: bf16, full_activation_checkpointing: true}
model:
  max_seqlen: 96
  vision_model: {drop_path: 0.1, ls_init_value: 0.1}
YAML

# 1. The uninterrupted run.
"$PLM" train recipe.yaml dump_dir=full > full.log 2>&1 || { cat full.log; fail "train exited $?"; }
final=full/checkpoints/0000000008
[ -f $final/manifest.json ] || fail "no final checkpoint"
"$PY" - full/metrics.jsonl <<'PYCHECK' || fail "metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 8, len(rows)
keys = {"global_step", "acc_step", "speed/wps", "speed/FLOPS", "speed/curr_iter_time", "speed/data_load_time",
        "optim/grad_norm", "optim/lr", "optim/total_tokens", "memory/max_active_gib", "memory/max_active_pct",
        "memory/max_reserved_gib", "memory/max_reserved_pct", "memory/num_alloc_retries", "memory/num_ooms",
        "memory/power_draw", "loss/out", "created_at", "speed/mfu", "speed/loss_tokens_per_s", "speed/samples_per_s",
        "speed/model_flops_per_s", "speed/data_wait_frac", "speed/wps_global", "speed/step_time",
        "speed/step_data_time", "loss/token_mean"}
for r in rows:
    missing = keys - set(r)
    assert not missing, missing
assert rows[0]["optim/lr"] == 0.0, "the first update runs at lr 0 (PLM's LambdaLR indexing)"
assert all(0 < r["speed/mfu"] <= 1 for r in rows), [r["speed/mfu"] for r in rows]  # the peak is a peak
assert rows[-1]["loss/out"] < rows[0]["loss/out"] - 1.0, [r["loss/out"] for r in rows]
PYCHECK
for f in config.yaml train.log; do [ -s full/$f ] || fail "no $f"; done

# 2. SIGKILL after the step-4 checkpoint, then resume: bit-identical weights.
"$PLM" train recipe.yaml dump_dir=killed > killed1.log 2>&1 &
pid=$!
wait_for $pid test -f killed/checkpoints/0000000004/manifest.json || fail "no step-4 checkpoint: $(tail -3 killed1.log)"
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
[ -d killed/checkpoints/0000000008 ] && fail "the run ended before the kill: nothing was resumed"
"$PLM" train recipe.yaml dump_dir=killed > killed2.log 2>&1 || fail "resume exited $?"
grep -q "resumed from" killed2.log || fail "the second run did not resume: $(tail -3 killed2.log)"
cmp -s $final/model.safetensors killed/checkpoints/0000000008/model.safetensors || fail "weights after SIGKILL+resume differ"
cmp -s $final/optimizer.safetensors killed/checkpoints/0000000008/optimizer.safetensors || fail "optimizer state differs"

# 3. SLURM's preemption warning (SIGUSR2; SIGTERM and SIGUSR1 take the same path): save where it is (possibly
#    inside an accumulation window), requeue the job through scontrol, exit 0; the resumed run is identical.
mkdir fakebin && printf '#!/bin/sh\necho "$@" > %s/scontrol.args\n' "$tmp" > fakebin/scontrol && chmod +x fakebin/scontrol
PATH="$tmp/fakebin:$PATH" SLURM_JOB_ID=4242 "$PLM" train recipe.yaml dump_dir=term > term1.log 2>&1 &
pid=$!
wait_for $pid test -s term/metrics.jsonl || fail "no metrics before the end: $(tail -3 term1.log)"
kill -USR2 $pid; wait $pid; rc=$?
[ $rc -eq 0 ] || fail "SIGUSR2 exit code $rc"
grep -q "stopped by a signal" term1.log || fail "no stop message: $(tail -3 term1.log)"
[ "$(cat scontrol.args 2>/dev/null)" = "requeue 4242" ] || fail "the job was not requeued"
"$PLM" train recipe.yaml dump_dir=term > term2.log 2>&1 || fail "resume after SIGUSR2 exited $?"
cmp -s $final/model.safetensors term/checkpoints/0000000008/model.safetensors || fail "weights after SIGUSR2+resume differ"

# 4. Damaged checkpoints are never resumed from, and the log says why.
"$PLM" train recipe.yaml dump_dir=damaged steps=6 > damaged1.log 2>&1 || fail "steps=6 run exited $?"
truncate -s -100 damaged/checkpoints/0000000006/model.safetensors
rm damaged/checkpoints/0000000004/manifest.json
"$PLM" train recipe.yaml dump_dir=damaged > damaged2.log 2>&1 || fail "run over damaged checkpoints exited $?"
grep -q "0000000006.*truncated" damaged2.log || fail "truncated shard not reported: $(grep -i skip damaged2.log)"
grep -q "0000000004.*manifest" damaged2.log || fail "missing manifest not reported"
grep -q "resumed from .*0000000002" damaged2.log || fail "did not resume from step 2"
cmp -s $final/model.safetensors damaged/checkpoints/0000000008/model.safetensors || fail "weights after damaged resume differ"
# The damaged folders were moved aside, not replaced by the new saves of steps 4 and 6 nor removed.
for st in 4 6; do
  [ -f damaged/checkpoints/000000000$st.damaged/params.json ] || fail "damaged step $st was not kept aside"
  [ -f damaged/checkpoints/000000000$st/manifest.json ] || fail "step $st was not saved afresh"
done
# When every step folder fails verification the run refuses to start (not step 0 over them), naming them and the
# override; they stay in place. With checkpoint.restart_when_damaged=true it starts at step 0 and keeps them aside.
"$PLM" train recipe.yaml dump_dir=alldamaged steps=4 > alldamaged1.log 2>&1 || fail "steps=4 run exited $?"
for f in alldamaged/checkpoints/*/optimizer.safetensors; do truncate -s -1 "$f"; done
"$PLM" train recipe.yaml dump_dir=alldamaged steps=4 > alldamaged2.log 2>&1 && fail "a run over only damaged checkpoints started"
grep -q "none of the 2 step folders.*0000000002 to 0000000004.*checkpoint.restart_when_damaged" alldamaged2.log ||
  fail "the refusal does not name the folders and the key: $(tail -2 alldamaged2.log)"
[ -d alldamaged/checkpoints/0000000004 ] && ! grep -q "resumed\|step 1/" alldamaged2.log || fail "the refusal moved or trained"
"$PLM" train recipe.yaml dump_dir=alldamaged steps=4 checkpoint.restart_when_damaged=true > alldamaged3.log 2>&1 ||
  fail "restart_when_damaged did not start"
[ -d alldamaged/checkpoints/0000000002.damaged ] && [ -d alldamaged/checkpoints/0000000004.damaged ] ||
  fail "restart_when_damaged did not keep the damaged folders aside"
grep -q "step 1/4" alldamaged3.log || fail "restart_when_damaged did not train from step 1"

# 5. Consolidate; the consolidated folder and the step folder give the same logits in `plm model forward`.
"$PLM" consolidate $final > consolidated.txt || fail "consolidate exited $?"
[ -f $final/consolidated.pth ] && [ -f $final/consolidated.safetensors ] || fail "consolidated files missing"
mkdir released && cp $final/params.json $final/consolidated.pth released/
"$PY" -c "
import torch; from safetensors.torch import save_file
save_file({'input_ids': torch.randint(0, 1000, (2, 12))}, 'inputs.safetensors')" || fail "inputs"
"$PLM" model forward --ckpt released --inputs inputs.safetensors --out a.safetensors 2>/dev/null || fail "forward (consolidated.pth)"
"$PLM" model forward --ckpt $final --inputs inputs.safetensors --out b.safetensors 2>/dev/null || fail "forward (step folder)"
"$PY" -c "
from safetensors.torch import load_file; import torch
a, b = load_file('a.safetensors')['logits'], load_file('b.safetensors')['logits']
assert torch.equal(a, b) and a.abs().max() > 0" || fail "logits differ"

# 6. Stage chaining: the next stage starts from the consolidated folder (LayerScale present here, so nothing is
#    missing) and its first logged loss is the trained model's, far below the first run's start.
"$PLM" train recipe.yaml dump_dir=next steps=1 checkpoint.init_ckpt_path=$tmp/released > next.log 2>&1 || fail "chained stage exited $?"
grep -q "initialised from $tmp/released" next.log || fail "chained stage did not load: $(grep -i init next.log)"
"$PY" - full/metrics.jsonl next/metrics.jsonl <<'PYCHECK' || fail "chained stage did not start from the trained weights"
import json, sys
full = [json.loads(l)["loss/out"] for l in open(sys.argv[1])]
nxt = json.loads(open(sys.argv[2]).readline())["loss/out"]
assert nxt < full[0] - 1.0, (nxt, full)
PYCHECK

# 6b. Every reader of a step folder checks its manifest first (weights only): a missing manifest or a damaged model
#     file is refused by model forward, generate and a stage start; a damaged optimizer file does not stop them.
cp -r $final nomanifest && rm nomanifest/manifest.json
cp -r $final badmodel && truncate -s -1 badmodel/model.safetensors
cp -r $final badoptim && truncate -s -1 badoptim/optimizer.safetensors
for dir in nomanifest badmodel; do
  "$PLM" model forward --ckpt $dir --inputs inputs.safetensors --out x.safetensors > fwd_$dir.txt 2>&1 &&
    fail "model forward read the damaged step folder $dir"
  grep -q "$dir" fwd_$dir.txt || fail "model forward's refusal does not name $dir: $(tail -1 fwd_$dir.txt)"
  "$PLM" generate --ckpt $dir --tokenizer "$ROOT/tests/fixtures/llama3/tokenizer.model" --question hi --max-gen-len 2 \
    > gen_$dir.txt 2>&1 && fail "generate read the damaged step folder $dir"
  grep -q "$dir.*manifest" gen_$dir.txt || fail "generate's refusal does not name $dir: $(tail -1 gen_$dir.txt)"
  "$PLM" train recipe.yaml dump_dir=from_$dir steps=1 checkpoint.init_ckpt_path=$tmp/$dir > init_$dir.txt 2>&1 &&
    fail "a stage start read the damaged step folder $dir"
  grep -q "$dir.*manifest" init_$dir.txt || fail "the stage start's refusal does not name $dir: $(tail -1 init_$dir.txt)"
done
grep -q "no manifest" fwd_nomanifest.txt && grep -q "bytes, the manifest says" fwd_badmodel.txt ||
  fail "the refusals do not say why: $(tail -1 fwd_nomanifest.txt) / $(tail -1 fwd_badmodel.txt)"
"$PLM" model forward --ckpt badoptim --inputs inputs.safetensors --out c.safetensors > /dev/null 2>&1 ||
  fail "a damaged optimizer file stopped model forward (it reads the weights only)"
# Inputs longer than the model's max_seqlen (96 here) are refused with a sentence, not run past the RoPE tables.
"$PY" -c "
import torch; from safetensors.torch import save_file
save_file({'input_ids': torch.randint(0, 1000, (1, 200))}, 'long.safetensors')" || fail "long inputs"
"$PLM" model forward --ckpt $final --inputs long.safetensors --out l.safetensors > long.txt 2>&1 &&
  fail "model forward ran inputs longer than max_seqlen"
grep -q "at most the model's max_seqlen 96" long.txt || fail "long inputs: $(tail -1 long.txt)"

# 7. profiling.run: PLM's schedule counts micro-batches; micro-batches 2-3 (step 2's two) are traced. The trace is
#    Chrome trace JSON (Python's json reads it) with both micro-batches' ranges, the forward and backward ops inside
#    them and the AdamW update inside the second.
#    The same run writes TensorBoard events (logging.tensorboard), which TensorBoard's own reader loads: every
#    numeric key of every metrics.jsonl record, at its global_step.
"$PLM" train recipe.yaml dump_dir=prof steps=3 checkpoint.dump.every=100 profiling.run=true profiling.profile_warmup=2 \
  profiling.profile_steps=2 profiling.mem_warmup=0 profiling.mem_steps=1 logging.tensorboard=true \
  > prof.log 2>&1 || fail "profiled run exited $?"
"$PY" - prof <<'PYCHECK' || fail "TensorBoard events"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
acc = EventAccumulator(f"{sys.argv[1]}/tensorboard", size_guidance={"scalars": 0})
acc.Reload()
want = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "global_step"}
assert set(acc.Tags()["scalars"]) == want, sorted(set(acc.Tags()["scalars"]) ^ want)
import numpy as np
for key in want:
    got = [(e.step, e.value) for e in acc.Scalars(key)]
    exp = [(r["global_step"], float(np.float32(r[key]))) for r in rows if isinstance(r.get(key), (int, float))]
    assert got == exp, (key, got, exp)
print(f"TensorBoard: {len(want)} scalars x {len(rows)} records read back by EventAccumulator")
PYCHECK
"$PY" - prof/profiling/profile_CPU_CUDA_000002/rank0.pt.trace.json <<'PYCHECK' || fail "profiler trace"
import json, sys
events = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
ranges = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events if e["name"].startswith("ProfilerStep#")}
assert sorted(ranges) == ["ProfilerStep#2", "ProfilerStep#3"], sorted(ranges)
def ops_in(name):
    lo, hi = ranges[name]
    return {e["name"] for e in events if lo <= e["ts"] <= hi and e.get("cat") == "cpu_op"}
for name in ranges:
    ops = ops_in(name)
    assert {"aten::mm", "aten::scaled_dot_product_attention"} & ops or "aten::addmm" in ops, (name, sorted(ops)[:40])
    assert any("Backward" in o for o in ops), (name, "no backward op")
assert "aten::_fused_adamw_" in ops_in("ProfilerStep#3") and "aten::_fused_adamw_" not in ops_in("ProfilerStep#2"), \
    "the AdamW update belongs to the micro-batch that ends the step"
print(f"profiler trace: {len(events)} events, {len(ops_in('ProfilerStep#3'))} distinct ops in ProfilerStep#3")
PYCHECK
grep -q "memory snapshots need a GPU" prof.log || fail "a CPU run does not say that it takes no memory snapshot"
"$PLM" config validate recipe.yaml dump_dir=x profiling.run=true profiling.profile_warmup=1 profiling.mem_warmup=2 \
  > overlap.txt 2>&1 && fail "overlapping profiler windows were accepted"
grep -q "profiling.profile_warmup" overlap.txt || fail "the overlap error does not name the key: $(cat overlap.txt)"

finish cli_train
