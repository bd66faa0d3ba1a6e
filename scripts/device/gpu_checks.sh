#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine through the device tool (see docs/ARCHITECTURE.md "GPU"): that machine
# has python3 with the same torch wheel but none of the Debian libraries plm links, so the CUDA binary and its
# non-torch libraries travel in .devcarry/ (prepared by scripts/device/pack.sh) and run through the carried dynamic
# loader. Results (logs, metrics, a summary) go to $OUT.
#   1. plm --version: CUDA compiled in, the GPU visible;
#   2. the tiny model, bf16, on the GPU: full_shard (the sharded code path, one rank) vs no_shard, step times;
#   3. plm generate from the tiny full_shard (sharded) checkpoint, fp32 on the GPU and on the CPU: same greedy text;
#   4. PLM-1B stage 3 shapes (all parameters train, bf16, activation checkpointing, rows of 11,520 tokens, toy
#      data): full_shard vs no_shard step time, MFU and peak memory;
#   5. profiling.run on the tiny model on the GPU: the Kineto trace has CUDA kernels inside the micro-batch ranges,
#      and the CUDA memory snapshot is a pickle with the allocator's segments and the window's alloc/free events;
#   6. ops_test's hidden [cuda] cases (when pack.sh carried ops_test): every ops:: primitive on CUDA tensors, fp32
#      and bf16, forward and backward, against the ATen path on the CPU (packed_attention's variable-length flash
#      path included, at PLM-1B's head shapes);
#   7. data.packing=samples on the GPU, bf16: the tiny model in rows of 512 and PLM-1B (stage 2's recipe with one
#      448-px tile of 256 tokens per image, rows of 1,280 as stage 1's, 16 toy samples of ~300 tokens), packed vs
#      unpacked samples/s and losses, and the log line naming the variable-length flash kernel;
#   8. LoRA on the GPU (last, so that a run out of time keeps the rest): the tiny model, fp32, LoRA r4 on every
#      linear with adapter dropout 0.1 under full_shard and no_shard + activation checkpointing (the keyed masks on
#      a CUDA generator must replay: same losses), then LoRA r16 on every linear at PLM-1B/3B/8B stage 3 shapes
#      (random base, bf16): trainable parameters, step time and peak memory, beside check 4's full fine-tune.
set -uo pipefail
ROOT="$PWD"; OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
work=/tmp/plm-gpu; rm -rf "$work"; mkdir -p "$work"
tar -xJf .devcarry/libs.tar.xz -C "$work" && xz -dc .devcarry/plm.xz > "$work/plm" && chmod +x "$work/plm" || exit 1
site="$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
libs="$work/lib:$site/torch/lib"
for d in "$site"/nvidia/*/lib "$site"/nvidia/cu13/lib /usr/local/nvidia/lib64 /usr/local/cuda/lib64 \
         /usr/lib/x86_64-linux-gnu; do [ -d "$d" ] && libs="$libs:$d"; done
export TORCH_SHOW_CPP_STACKTRACES=1 OMP_WAIT_POLICY=passive  # plm would re-execute itself to set it: not through the carried loader
mkdir -p "$work/bin"  # a command, not a function, so that timeout can run it
printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' "$work/lib/ld-linux-x86-64.so.2" "$libs" "$work/plm" \
  > "$work/bin/plm" && chmod +x "$work/bin/plm" && export PATH="$work/bin:$PATH"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; plm --version; } 2>&1 | tee "$OUT/version.txt"

ops_check() {  # the ops on CUDA against the CPU's ATen path; run first, it needs no data
  [ -f "$ROOT/.devcarry/ops_test.xz" ] || { echo "ops [cuda]: not carried (pack.sh found no ops_test)"; return; }
  xz -dc "$ROOT/.devcarry/ops_test.xz" > "$work/ops_test" && chmod +x "$work/ops_test"
  timeout 180 "$work/lib/ld-linux-x86-64.so.2" --library-path "$libs" "$work/ops_test" "[cuda]" \
      > "$OUT/ops_cuda.log" 2>&1 && echo "ops [cuda]: $(grep -E 'passed|failed' "$OUT/ops_cuda.log" | tail -1)" ||
    echo "ops [cuda] failed: $(tail -5 "$OUT/ops_cuda.log")"
}
ops_check | tee -a "$OUT/summary.txt"

cd "$work"
# The e2e tests' toy data (tests/e2e/lib.sh make_toy_data), made by the same Python.
sed -n '/<<.PYDATA/,/^PYDATA/p' "$ROOT/tests/e2e/lib.sh" | sed '1d;$d' > make_data.py
[ -s make_data.py ] && python3 make_data.py "$work" && [ -f "$work/train.jsonl" ] || { echo "no toy data" | tee -a "$OUT/summary.txt"; exit 1; }
printf 'toy:\n  annotation: %s/train.jsonl\n  root_dir: %s\n' "$work" "$work" > datasets.yaml
common=(data.registry="$work/datasets.yaml" data.datamix=toy:1 checkpoint.init_ckpt_path=null
        checkpoint.vision_model_path=null data.tokenizer_path="$ROOT/tests/fixtures/llama3/tokenizer.model"
        distributed.device=cuda logging.freq=1 data.num_workers=4 checkpoint.dump.every=100000)
summary() {  # name: mean iteration time of steps 3.., MFU, memory
  python3 - "$1" "$work/$1/metrics.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if '"loss/out"' in l]
late = [r for r in rows if r["global_step"] >= 3] or rows
it = sum(r["speed/curr_iter_time"] for r in late) / len(late)
mfu = [r["speed/mfu"] for r in late if r.get("speed/mfu") is not None]
print(f"{sys.argv[1]}: {len(rows)} steps, loss {rows[0]['loss/out']:.4f} -> {rows[-1]['loss/out']:.4f}, "
      f"iter {it:.4f} s (mean of steps >= 3), MFU {sum(mfu) / max(1, len(mfu)):.3f}, "
      f"wps {late[-1]['speed/wps']:.0f}, peak GPU memory (active/reserved) "
      f"{max(r['memory/max_active_gib'] for r in rows):.2f}/{max(r['memory/max_reserved_gib'] for r in rows):.2f} GiB")
PY
}
for mode in full_shard no_shard; do
  timeout 120 plm train "$ROOT/configs/models/tiny.yaml" dump_dir="$work/tiny_$mode" steps=30 "${common[@]}" \
      data.batch_size=8 data.image_res=56 data.max_num_tiles=1 data.vision_input_type=vanilla model.max_seqlen=96 \
      data.conversation_format=plm_sft distributed.fsdp_type=$mode distributed.model_dtype=bf16 optim.warmup=2 \
      > "$OUT/tiny_$mode.log" 2>&1 || echo "tiny $mode failed: $(tail -3 "$OUT/tiny_$mode.log")" | tee -a "$OUT/summary.txt"
  summary "tiny_$mode"
done
ck="$work/tiny_full_shard/checkpoints/0000000030"
for dev in cuda cpu; do
  timeout 60 plm generate --ckpt "$ck" --tokenizer "$ROOT/tests/fixtures/llama3/tokenizer.model" --device $dev --dtype fp32 \
      --question "What colour is it?" --media-path "$work/0.png" --max-gen-len 8 --print-ids \
      > "$OUT/generate_$dev.txt" 2>&1 || echo "generate on $dev failed" >> "$OUT/summary.txt"
done
same=$(diff -q <(grep "ids:" "$OUT/generate_cuda.txt") <(grep "ids:" "$OUT/generate_cpu.txt") >/dev/null && echo same || echo different)
echo "generate cuda vs cpu: $same prompt and generated ids" | tee -a "$OUT/summary.txt"
timeout 120 plm train "$ROOT/configs/models/tiny.yaml" dump_dir="$work/tiny_prof" steps=6 "${common[@]}" \
    data.batch_size=8 data.image_res=56 data.max_num_tiles=1 data.vision_input_type=vanilla model.max_seqlen=96 \
    data.conversation_format=plm_sft distributed.model_dtype=bf16 profiling.run=true profiling.mem_warmup=1 \
    profiling.mem_steps=2 profiling.profile_warmup=3 profiling.profile_steps=2 > "$OUT/tiny_prof.log" 2>&1 ||
  echo "profiled tiny failed: $(tail -3 "$OUT/tiny_prof.log")" | tee -a "$OUT/summary.txt"
python3 - "$work/tiny_prof/profiling" <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import glob, json, pickle, sys
d = sys.argv[1]
try:
    ev = [e for e in json.load(open(f"{d}/profile_CPU_CUDA_000003/rank0.pt.trace.json"))["traceEvents"] if e.get("ph") == "X"]
    ranges = [(e["ts"], e["ts"] + e["dur"]) for e in ev if e["name"].startswith("ProfilerStep#")]
    kernels = [e for e in ev if e.get("cat") == "kernel"]
    print(f"profiler: {len(ranges)} step ranges, {len(kernels)} CUDA kernels in the trace")
    snaps = glob.glob(f"{d}/memory_snapshot/*_rank0.pickle")
    s = pickle.load(open(snaps[0], "rb"))
    print(f"memory snapshot {snaps[0].split('/')[-1]}: {len(s['segments'])} segments, "
          f"{sum(len(t) for t in s['device_traces'])} trace events")
except Exception as e:
    print(f"profiler check failed: {type(e).__name__}: {e}")
PY
for mode in full_shard no_shard; do
  rm -rf "$work"/tiny_*/checkpoints
  timeout 200 plm train "$ROOT/recipes/stage3_sft/plm_1b.yaml" dump_dir="$work/b1_$mode" steps=6 "${common[@]}" \
      data.batch_size=1 distributed.fsdp_type=$mode > "$OUT/b1_$mode.log" 2>&1 ||
      echo "1B $mode failed: $(tail -3 "$OUT/b1_$mode.log")" | tee -a "$OUT/summary.txt"
  summary "b1_$mode"
  nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/summary.txt" 2>&1
done
packed_summary() {  # name: median samples/s after the first steps, mean packing efficiency, first/last loss
  python3 - "$1" "$work/$1/metrics.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if '"loss/out"' in l]
late = [r for r in rows if r["global_step"] >= 3] or rows
print(f"{sys.argv[1]}: {statistics.median(r['speed/samples_per_s'] for r in late):.1f} samples/s, packing efficiency "
      f"{statistics.mean(r['data/packing_efficiency'] for r in late):.3f}, loss {rows[0]['loss/out']:.5f} -> "
      f"{rows[-1]['loss/out']:.5f}, MFU {statistics.mean(r['speed/mfu'] or 0 for r in late):.3f}")
PY
}
for packing in none samples; do
  timeout 120 plm train "$ROOT/configs/models/tiny.yaml" dump_dir="$work/pack_tiny_$packing" steps=20 "${common[@]}" \
      data.batch_size=16 data.image_res=56 data.max_num_tiles=1 data.vision_input_type=vanilla model.max_seqlen=512 \
      data.conversation_format=plm_sft distributed.model_dtype=bf16 optim.warmup=2 data.packing=$packing \
      > "$OUT/pack_tiny_$packing.log" 2>&1 || echo "packed tiny ($packing) failed: $(tail -3 "$OUT/pack_tiny_$packing.log")" |
    tee -a "$OUT/summary.txt"
  packed_summary "pack_tiny_$packing"
  timeout 200 plm train "$ROOT/recipes/stage2_midtrain/plm_1b.yaml" dump_dir="$work/pack_b1_$packing" steps=8 \
      "${common[@]}" data.batch_size=16 data.max_num_tiles=1 data.vision_input_type=vanilla model.max_seqlen=1280 \
      data.packing=$packing > "$OUT/pack_b1_$packing.log" 2>&1 ||
    echo "packed 1B ($packing) failed: $(tail -3 "$OUT/pack_b1_$packing.log")" | tee -a "$OUT/summary.txt"
  packed_summary "pack_b1_$packing"
done
grep -h "packed attention (cuda" "$OUT"/pack_*.log | sed 's/^.*packed attention/packed attention/' | sort -u | tee -a "$OUT/summary.txt"
for mode in full_shard no_shard; do
  extra=(); [ $mode = no_shard ] && extra=(distributed.full_activation_checkpointing=true)
  timeout 120 plm train "$ROOT/configs/models/tiny.yaml" dump_dir="$work/lora_tiny_$mode" steps=12 "${common[@]}" \
      data.batch_size=8 data.image_res=56 data.max_num_tiles=1 data.vision_input_type=vanilla model.max_seqlen=96 \
      data.conversation_format=plm_sft distributed.fsdp_type=$mode distributed.model_dtype=fp32 optim.warmup=2 \
      optim.lr=0.01 model.lora.rank=4 model.lora.targets=all model.lora.dropout=0.1 "${extra[@]}" \
      > "$OUT/lora_tiny_$mode.log" 2>&1 || echo "LoRA tiny $mode failed: $(tail -3 "$OUT/lora_tiny_$mode.log")" |
    tee -a "$OUT/summary.txt"
done
python3 - "$work/lora_tiny_full_shard/metrics.jsonl" "$work/lora_tiny_no_shard/metrics.jsonl" <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import json, sys
a, b = ({r["global_step"]: r["loss/out"] for r in map(json.loads, open(f)) if "loss/out" in r} for f in sys.argv[1:])
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
print(f"LoRA dropout on CUDA, full_shard vs no_shard + AC: {len(a)} steps, losses within {worst:.2e} "
      f"({'replayed' if worst < 1e-4 else 'NOT replayed'}); loss {a[1]:.4f} -> {a[max(a)]:.4f}")
PY
for size in 1b 3b 8b; do
  timeout 240 plm train "$ROOT/recipes/stage3_sft/plm_$size.yaml" dump_dir="$work/lora_$size" steps=4 "${common[@]}" \
      data.batch_size=1 model.lora.rank=16 model.lora.alpha=32 model.lora.targets=all \
      > "$OUT/lora_$size.log" 2>&1 || echo "LoRA $size failed: $(tail -3 "$OUT/lora_$size.log")" | tee -a "$OUT/summary.txt"
  grep -h "model parameters:" "$OUT/lora_$size.log" | sed 's/^.*model parameters/lora_'$size' parameters/' |
    tee -a "$OUT/summary.txt"
  summary "lora_$size"
  rm -rf "$work/lora_$size/checkpoints"
done
cp "$work"/b1_*/metrics.jsonl "$OUT/" 2>/dev/null; for f in "$work"/b1_*/metrics.jsonl; do cp "$f" "$OUT/$(basename "$(dirname "$f")").metrics.jsonl"; done
cat "$OUT/summary.txt"
