#!/usr/bin/env bash
# LoRA end to end on the tiny model (docs/lora.md): a LoRA run over a base checkpoint trains only the adapters (the
# base's weights are unchanged, bit for bit) and its loss falls; its step folders hold the adapters, their optimizer
# state and lora_base.json only; a SIGKILLed run resumes to bit-identical adapters and optimizer state; resuming over
# another base is refused with one sentence; `plm model forward` and `plm generate` read the step folder (base +
# adapters); `plm export --plm --merge-lora` gives the same logits without adapters; `plm export --hf` of the LoRA
# run loads in transformers with the same logits (and AutoProcessor builds image prompts it generates from), and
# `plm export --peft` gives an adapter folder that PEFT loads over
# the base's HF export with the same logits; two no_shard ranks train 1 rank's adapters; in bf16 the
# frozen base is held without fp32 masters; 2-rank full_shard trains the same adapters as no_shard, checkpoints
# only the adapter buffers, resumes bit-identically at 2 ranks and resumes under no_shard on 1 rank; with adapter
# dropout 2 full_shard ranks still give 1 rank's losses.
# Usage: tests/e2e/cli_lora.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
cd "$tmp"
make_toy_data "$tmp" || { echo "FAIL: could not make data"; exit 1; }
toy_recipe recipe.yaml 4 2 <<YAML
name: lora_e2e
steps: 6
optim: {lr: 0.003, warmup: 2, lr_min_ratio: 0.1}
logging: {freq: 1}
checkpoint: {dump: {every: 3, keep: 0}}
model:
  max_seqlen: 96
YAML
# Two bases: a short full run, and the same run one step longer.
"$PLM" train recipe.yaml dump_dir=base > base.log 2>&1 || { tail -3 base.log; fail "base run exited"; }
"$PLM" train recipe.yaml dump_dir=other steps=7 > other.log 2>&1 || fail "second base run exited"
BASE=base/checkpoints/0000000006
LORA=(model.lora.rank=4 model.lora.alpha=8 model.lora.targets=all checkpoint.init_ckpt_path=$BASE steps=12
      optim.lr=0.02 checkpoint.dump.every=4)

# 1. The uninterrupted LoRA run.
"$PLM" train recipe.yaml dump_dir=lora "${LORA[@]}" > lora.log 2>&1 || { tail -3 lora.log; fail "LoRA run exited"; }
final=lora/checkpoints/0000000012
grep -q "LoRA rank 4.*adapter parameters over the base" lora.log || fail "the log does not describe the adapters"
[ -f $final/lora_base.json ] || fail "no lora_base.json in the LoRA step folder"
"$PY" - "$final" "$BASE" lora/metrics.jsonl <<'PYCHECK' || fail "adapter-only checkpoint / loss"
import json, sys, torch
from safetensors.torch import load_file
step, base, metrics = sys.argv[1:]
m = load_file(f"{step}/model.safetensors")
assert m and all(".lora_A." in k or ".lora_B." in k for k in m), sorted(m)[:4]
opt = load_file(f"{step}/optimizer.safetensors")
assert all(".lora_" in k for k in opt), sorted(opt)[:4]
rec = json.load(open(f"{step}/lora_base.json"))
assert rec["base"].endswith("base/checkpoints/0000000006") and rec["checksum"].startswith("crc32:"), rec
assert any(t.abs().max() > 0 for k, t in m.items() if ".lora_B." in k), "B stayed zero: nothing trained"
rows = [json.loads(l) for l in open(metrics)]
first, last = rows[0]["loss/out"], sum(r["loss/out"] for r in rows[-3:]) / 3
assert last < first - 0.05, (first, last)
PYCHECK

# 2. Only the adapters changed: the step folder read as a model (base + adapters) has the base's tensors exactly.
"$PLM" consolidate $final > /dev/null 2>&1 || fail "consolidate of the LoRA step folder"
"$PY" - "$final" "$BASE" <<'PYCHECK' || fail "the base weights changed"
import sys, torch
from safetensors.torch import load_file
step, base = sys.argv[1:]
full, b = load_file(f"{step}/consolidated.safetensors"), load_file(f"{base}/model.safetensors")
base_names = [k for k in full if ".lora_" not in k]
assert set(base_names) == {k for k in b if k != "output.tied_module.weight"}, set(base_names) ^ set(b)
assert all(torch.equal(full[k], b[k]) for k in base_names)
assert sum(".lora_" in k for k in full) > 0
PYCHECK

# 3. SIGKILL after the step-4 checkpoint, then resume: bit-identical adapters and optimizer state.
"$PLM" train recipe.yaml dump_dir=killed "${LORA[@]}" > killed1.log 2>&1 &
pid=$!
wait_for $pid test -f killed/checkpoints/0000000004/manifest.json || fail "no step-4 checkpoint: $(tail -3 killed1.log)"
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
[ -d killed/checkpoints/0000000012 ] && fail "the run ended before the kill: nothing was resumed"
"$PLM" train recipe.yaml dump_dir=killed "${LORA[@]}" > killed2.log 2>&1 || fail "LoRA resume exited $?"
grep -q "resumed from" killed2.log || fail "the LoRA run did not resume"
cmp -s $final/model.safetensors killed/checkpoints/0000000012/model.safetensors || fail "adapters after SIGKILL+resume differ"
cmp -s $final/optimizer.safetensors killed/checkpoints/0000000012/optimizer.safetensors || fail "optimizer state differs"

# 4. Resuming over another base is refused, naming the record and both bases.
"$PLM" train recipe.yaml dump_dir=lora "${LORA[@]}" steps=16 checkpoint.init_ckpt_path=other/checkpoints/0000000007 \
  > wrongbase.log 2>&1 && fail "a LoRA run resumed over another base"
grep -q "lora_base.json' says these adapters were trained on .*base/checkpoints/0000000006.*other/checkpoints/0000000007" \
  wrongbase.log || fail "the refusal does not name the record and the bases: $(tail -1 wrongbase.log)"

# 5. The step folder runs; merged and HF exports give its logits.
"$PY" -c "
import torch; from safetensors.torch import save_file
torch.manual_seed(0); save_file({'input_ids': torch.randint(0, 128000, (2, 12))}, 'in.safetensors')"
"$PLM" model forward --ckpt $final --inputs in.safetensors --out lora_logits.safetensors > /dev/null 2>&1 ||
  fail "forward of the LoRA step folder"
"$PLM" model forward --ckpt $BASE --inputs in.safetensors --out base_logits.safetensors > /dev/null 2>&1 || fail "base forward"
"$PLM" generate --ckpt $final --question "Say hi" --max-gen-len 4 > gen.txt 2> gen.log || fail "generate: $(tail -1 gen.log)"
"$PLM" export --plm merged $final --merge-lora > /dev/null 2> merge.log || fail "export --merge-lora: $(tail -1 merge.log)"
"$PLM" model forward --ckpt merged --inputs in.safetensors --out merged_logits.safetensors > /dev/null 2>&1 ||
  fail "forward of the merged export"
"$PLM" consolidate $final --merge-lora merged_too > /dev/null 2> merge2.log || fail "consolidate --merge-lora: $(tail -1 merge2.log)"
cmp -s merged/consolidated.pth merged_too/consolidated.pth || fail "consolidate --merge-lora differs from export --merge-lora"
"$PLM" export --hf hf $final > /dev/null 2> hf.log || fail "export --hf of the LoRA run: $(tail -1 hf.log)"
"$PLM" export --hf hf_base $BASE > /dev/null 2> hf_base.log || fail "export --hf of the base: $(tail -1 hf_base.log)"
"$PLM" export --peft peft $final > /dev/null 2> peft.log || fail "export --peft: $(tail -1 peft.log)"
"$PLM" export --peft peft_of_base $BASE > /dev/null 2> peft_base.log && fail "a PEFT export of a run without LoRA"
grep -q "has no LoRA adapters" peft_base.log || fail "no sentence for a PEFT export without LoRA: $(tail -1 peft_base.log)"
"$PY" - <<'PYCHECK' || fail "merged / HF logits"
import json, torch
from safetensors.torch import load_file
from transformers import PerceptionLMForConditionalGeneration
lora, base, merged = (load_file(f"{n}_logits.safetensors")["logits"] for n in ("lora", "base", "merged"))
scale = lora.abs().max()
assert (lora - base).abs().max() > 1e-3 * scale, "the adapters do not act"
assert (merged - lora).abs().max() <= 1e-5 * scale, (merged - lora).abs().max()
p = json.load(open("merged/params.json"))
assert p["model"]["lora"] is None, p["model"]["lora"]
assert not any(".lora_" in k for k in torch.load("merged/consolidated.pth", weights_only=True))
m = PerceptionLMForConditionalGeneration.from_pretrained("hf").float().eval()
with torch.no_grad():
    hf = m(input_ids=load_file("in.safetensors")["input_ids"], use_cache=False).logits
assert (hf - lora).abs().max() <= 1e-4 * scale, (hf - lora).abs().max()
# transformers' AutoProcessor loads the export: its image token is the config's, and an image prompt it builds
# (tiles, one image token per vision vector) generates with the exported model.
from PIL import Image
from transformers import AutoProcessor
proc = AutoProcessor.from_pretrained("hf")
assert (proc.image_token_id, proc.video_token_id) == (m.config.image_token_id, m.config.video_token_id)
batch = proc(text="<|image|>What colour is it?", images=[Image.open("0.png")], return_tensors="pt")
assert (batch["input_ids"] == m.config.image_token_id).sum() > 0 and batch["pixel_values"].shape[1] >= 1
with torch.no_grad():
    out = m.generate(**batch, max_new_tokens=3, do_sample=False)
assert out.shape[1] > batch["input_ids"].shape[1], out.shape
# PEFT's adapter folder on the base's HF export: PEFT's own LoRA layers compute the run's model.
from peft import PeftModel
base = PerceptionLMForConditionalGeneration.from_pretrained("hf_base").float().eval()
peft = PeftModel.from_pretrained(base, "peft").eval()
cfg = json.load(open("peft/adapter_config.json"))
wrapped = sum(1 for n, _ in peft.named_modules() if n.endswith(".lora_A.default"))
assert wrapped == len(cfg["target_modules"]) > 0, (wrapped, len(cfg["target_modules"]))
with torch.no_grad():
    pl = peft(input_ids=load_file("in.safetensors")["input_ids"], use_cache=False).logits
assert (pl - lora).abs().max() <= 1e-4 * scale, (pl - lora).abs().max()
PYCHECK

# A step folder whose base has gone is refused with one sentence naming lora_base.json and the base.
mv base base_moved
"$PLM" model forward --ckpt $final --inputs in.safetensors --out x.safetensors > nobase.log 2>&1 && fail "ran without its base"
grep -q "lora_base.json' names the base checkpoint '.*base/checkpoints/0000000006', which does not exist" nobase.log ||
  fail "no sentence for a missing base: $(tail -1 nobase.log)"
mv base_moved base

# 6. Two ranks (no_shard, the same global batch) train the same adapters as one.
G=(optim.loss_normalization=global_tokens distributed.model_dtype=fp32 distributed.timeout_s=60)
"$PLM" train recipe.yaml dump_dir=one "${LORA[@]}" "${G[@]}" > one.log 2>&1 || fail "1-rank global_tokens LoRA run"
"$PLM" launch --nproc-per-node 2 recipe.yaml dump_dir=two "${LORA[@]}" "${G[@]}" data.batch_size=2 > two.log 2>&1 ||
  fail "2-rank LoRA run: $(tail -2 two.log)"
"$PY" - one two <<'PYCHECK' || fail "2 ranks differ from 1"
import json, sys, torch
from safetensors.torch import load_file
def losses(run):
    return {r["global_step"]: r["loss/token_mean"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss/token_mean" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(a) == sorted(b) and len(a) == 12, (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
assert worst <= 1e-5, worst
x, y = (load_file(f"{r}/checkpoints/0000000012/model.safetensors") for r in sys.argv[1:])
assert set(x) == set(y)
num = sum(((x[k] - y[k]) ** 2).sum() for k in x) ** 0.5
den = sum((x[k] ** 2).sum() for k in x) ** 0.5
assert num / den <= 1e-5, (num / den).item()
print(f"2 ranks vs 1: losses within {worst:.1e}, adapters within {(num / den).item():.1e} (global relative norm)")
PYCHECK

# 7. bf16: the frozen base is held in bf16 only (no fp32 masters), the adapters keep theirs.
"$PLM" train recipe.yaml dump_dir=bf16 "${LORA[@]}" steps=2 distributed.model_dtype=bf16 > bf16.log 2>&1 ||
  fail "bf16 LoRA run: $(tail -1 bf16.log)"
"$PY" - bf16.log one.log <<'PYCHECK' || fail "bf16 LoRA holds fp32 masters of the base"
import re, sys
held = lambda f: int(re.search(r"holds (\d+) bytes of master parameters", open(f).read()).group(1))
counts = re.search(r"model parameters: (\d+) total, (\d+) trainable", open(sys.argv[1]).read())
total, trainable = int(counts.group(1)), int(counts.group(2))
assert held(sys.argv[1]) == 2 * (total - trainable) + 4 * trainable, (held(sys.argv[1]), total, trainable)
assert held(sys.argv[2]) == 4 * total, held(sys.argv[2])
PYCHECK

# 8. full_shard: 2 ranks train the same adapters as one no_shard rank; the step folder holds the adapter buffers only;
#    a resume at 2 ranks is bit-identical, and the sharded checkpoint resumes under no_shard on 1 rank.
FS=(distributed.fsdp_type=full_shard data.batch_size=2)
"$PLM" launch --nproc-per-node 2 recipe.yaml dump_dir=fs "${LORA[@]}" "${G[@]}" "${FS[@]}" > fs.log 2>&1 ||
  fail "2-rank full_shard LoRA run: $(tail -2 fs.log)"
cp -r fs fs_resumed && rm -rf fs_resumed/checkpoints/0000000012 fs_resumed/metrics.jsonl
"$PLM" launch --nproc-per-node 2 recipe.yaml dump_dir=fs_resumed "${LORA[@]}" "${G[@]}" "${FS[@]}" > fs2.log 2>&1 ||
  fail "2-rank full_shard LoRA resume: $(tail -2 fs2.log)"
grep -q "resumed from .*0000000008" fs2.log || fail "the full_shard LoRA run did not resume from step 8"
cp -r fs fs_as_one && rm -rf fs_as_one/checkpoints/0000000012 fs_as_one/metrics.jsonl
"$PLM" train recipe.yaml dump_dir=fs_as_one "${LORA[@]}" "${G[@]}" > fs1.log 2>&1 ||
  fail "no_shard resume of a full_shard LoRA checkpoint: $(tail -2 fs1.log)"
for d in fs fs_resumed; do "$PLM" consolidate $d/checkpoints/0000000012 > /dev/null 2>&1 || fail "consolidate $d"; done
"$PLM" model forward --ckpt fs/checkpoints/0000000012 --inputs in.safetensors --out fs_logits.safetensors \
  > /dev/null 2>&1 || fail "forward of the full_shard LoRA step folder"
"$PLM" model forward --ckpt one/checkpoints/0000000012 --inputs in.safetensors --out one_logits.safetensors \
  > /dev/null 2>&1 || fail "forward of the no_shard LoRA step folder"
"$PY" - <<'PYCHECK' || fail "full_shard LoRA differs from no_shard"
import json, torch
from safetensors.torch import load_file
def losses(run):
    return {r["global_step"]: r["loss/token_mean"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss/token_mean" in r}
step = "checkpoints/0000000012"
layout = json.load(open(f"fs/{step}/shards.json"))
names = [u["name"] for u in layout["units"]]
assert names and all(n.endswith(".trainable") for n in names), names
assert json.load(open(f"fs/{step}/lora_base.json"))["checksum"].startswith("crc32:")
a, b, c = losses("one"), losses("fs"), losses("fs_as_one")
assert sorted(a) == sorted(b) and len(a) == 12, (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
assert worst <= 1e-5, worst
assert sorted(c) == [9, 10, 11, 12], sorted(c)
worst_resumed = max(abs(b[s] - c[s]) / abs(b[s]) for s in c)
assert worst_resumed <= 1e-5, worst_resumed
one = load_file(f"one/{step}/model.safetensors")
full, again = (load_file(f"{r}/{step}/consolidated.safetensors") for r in ("fs", "fs_resumed"))
assert all(torch.equal(full[k], again[k]) for k in full), "2-rank full_shard resume is not bit-identical"
num = sum(((full[k] - one[k]) ** 2).sum() for k in one) ** 0.5
den = sum((one[k] ** 2).sum() for k in one) ** 0.5
assert num / den <= 1e-5, (num / den).item()
x, y = (load_file(f"{n}_logits.safetensors")["logits"] for n in ("fs", "one"))
assert (x - y).abs().max() <= 1e-4 * y.abs().max(), (x - y).abs().max()
print(f"full_shard 2 ranks vs no_shard 1: losses within {worst:.1e}, adapters within {(num / den).item():.1e}; "
      f"no_shard resume of the sharded checkpoint within {worst_resumed:.1e}")
PYCHECK
# 9. Adapter dropout: the masks are keyed by sample, so 2 full_shard ranks (which recompute every block) give one
#    no_shard rank's losses; once B is not zero (step 3: warmup's first learning rate is 0) they differ from the run
#    without dropout.
D=(model.lora.dropout=0.2 steps=6)
"$PLM" train recipe.yaml dump_dir=one_d "${LORA[@]}" "${G[@]}" "${D[@]}" > one_d.log 2>&1 || fail "1-rank dropout run"
"$PLM" launch --nproc-per-node 2 recipe.yaml dump_dir=fs_d "${LORA[@]}" "${G[@]}" "${FS[@]}" "${D[@]}" > fs_d.log 2>&1 ||
  fail "2-rank full_shard dropout run: $(tail -2 fs_d.log)"
"$PY" - <<'PYCHECK' || fail "LoRA dropout: ranks disagree or it does nothing"
import json
def losses(run):
    return {r["global_step"]: r["loss/token_mean"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss/token_mean" in r}
a, b, plain = losses("one_d"), losses("fs_d"), losses("one")
assert sorted(a) == sorted(b) == list(range(1, 7)), (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
assert worst <= 1e-5, worst
assert abs(a[1] - plain[1]) <= 1e-6 * abs(plain[1]), (a[1], plain[1])
assert all(abs(a[s] - plain[s]) > 1e-5 * abs(plain[s]) for s in range(3, 7)), [(a[s], plain[s]) for s in a]
print(f"dropout 0.2: full_shard 2 ranks vs no_shard 1 within {worst:.1e}")
PYCHECK

finish cli_lora
