# Sourced by every tests/e2e/*.sh script (run from the repository root with the plm binary as $1):
#   e2e_init "$1"        PLM (absolute), ROOT, PY (the project's .venv python), tmp (a scratch folder, removed on
#                        exit together with any background job still running), failures = 0
#   fail MESSAGE         records a failure and goes on
#   finish NAME          prints the outcome and exits non-zero if anything failed
#   wait_for PID TEST... waits until the command TEST... succeeds (0) or process PID has ended without it (1);
#                        never a fixed time: only ctest's per-test TIMEOUT bounds a wait, so a busy machine cannot
#                        fail a correct run
#   make_toy_data DIR    48 coloured 56-px pictures with "What colour is it?" and 16 text-only rows, shuffled, as
#                        DIR/train.jsonl, plus DIR/datasets.yaml registering them as dataset "toy"
#   toy_recipe FILE BATCH WORKERS
#                        writes FILE: the recipe's own top-level keys from stdin (name, steps, optim, model, ...),
#                        then the tiny model and make_toy_data's "toy" data in $tmp (56-px single tiles, Llama 3's
#                        tokenizer, plm_sft) with data.batch_size BATCH and data.num_workers WORKERS

e2e_init() {
  PLM="$(readlink -f "$1")"
  ROOT="$PWD"
  PY="$ROOT/.venv/bin/python"
  [ -x "$PY" ] || { echo "FAIL: $PY missing: run scripts/setup.sh"; exit 1; }
  tmp="$(mktemp -d)"
  trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
  failures=0
}

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

finish() {
  if [ "$failures" -eq 0 ]; then echo "$1: all checks passed"; else echo "$1: $failures check(s) failed"; fi
  exit $((failures > 0))
}

wait_for() {
  local pid="$1"
  shift
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      "$@"  # the event may have happened just before the process ended
      return
    fi
    sleep 0.02
  done
}

make_toy_data() {
  "$PY" - "$1" <<'PYDATA' || return 1
import json, os, random, sys
from PIL import Image
import numpy as np
out = sys.argv[1]
rng = np.random.default_rng(0); random.seed(0)
cols = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255)}
rows = []
for i in range(48):
    c = random.choice(list(cols))
    img = np.clip(np.array(cols[c]) * 0.75 + rng.integers(0, 64, (56, 56, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(out, f"{i}.png"))
    rows.append({"image": f"{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "assistant", "value": c}]})
for i in range(16):
    rows.append({"conversations": [{"from": "human", "value": "Say hi"}, {"from": "assistant", "value": "hi there"}]})
random.shuffle(rows)
open(os.path.join(out, "train.jsonl"), "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYDATA
  printf 'toy:\n  annotation: %s/train.jsonl\n  root_dir: %s\n' "$1" "$1" > "$1/datasets.yaml"
}

toy_recipe() {
  {
    cat
    cat <<YAML
include: $ROOT/configs/models/tiny.yaml
data:
  datamix: toy:1
  registry: $tmp/datasets.yaml
  tokenizer_path: $ROOT/tests/fixtures/llama3/tokenizer.model
  batch_size: $2
  num_workers: $3
  image_res: 56
  max_num_tiles: 1
  vision_input_type: vanilla
  conversation_format: plm_sft
YAML
  } > "$1"
}
