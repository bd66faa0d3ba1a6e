#!/usr/bin/env bash
# The CPU demo (docs/demo.md): installs and builds plm, writes the synthetic demo dataset, trains the tiny PLM
# through PLM's three stages (recipes/demo/stage{1,2,3}.yaml, each stage starting from the previous one's
# consolidated checkpoint), evaluates it on the held-out test split, answers one image and one video question,
# plots the training curves and ends with one JSON line:
#   {"demo": "full", "accuracy": {task: value}, "chance": {task: value}, "seconds": s}
#
#   scripts/demo.sh                      # about 10 minutes on 2 cores; everything goes to dump/demo/
#   scripts/demo.sh --short              # one to two minutes: half the data, three image tasks, few steps (the e2e test)
#   scripts/demo.sh --plm build/plm --out /tmp/demo    # skip setup and build, use that binary, write there
#
# Accuracy is exact match (mcq: the option letter; short answers: the word or number); rtloc reports
# PLM-VideoBench's mean recall over IoU thresholds 0.3/0.5/0.7/0.9; captions (stage 1-2 training data, chance ~0)
# are not evaluated.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

MODE=full
OUT=""
PLM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) MODE=short ;;
    --out) OUT="$2"; shift ;;
    --plm) PLM="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-dump/demo${MODE/full/}}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
START=$SECONDS
say() { echo "[demo $((SECONDS - START))s] $*"; }
elapsed() { echo $((SECONDS - $1)); }

# The tiny model's operations are too small to keep two threads busy; under GNU OpenMP's default active wait the
# waiting thread spins, and on a machine whose cores are shared that made training 5-8x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

# --- 1. setup and build (the default build, build/plm) --------------------------------------------------------
T=$SECONDS
if [ -z "$PLM" ]; then
  say "setup and build (scripts/setup.sh, scripts/build.sh)"
  scripts/setup.sh
  PLM_BUILD_TARGET=plm scripts/build.sh
  PLM="$ROOT/build/plm"
fi
[ -x "$PLM" ] || { echo "demo.sh: '$PLM' is not an executable plm binary" >&2; exit 2; }
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=python3
T_BUILD=$(elapsed $T)

# The full run uses the recipes as they are. The short run (the test suite's check, one to two minutes) trains stages 2
# and 3 on three image tasks only (colour_mcq, count_short, position_mcq), on half the data: enough steps for them to
# be learnt reliably, which the twelve-task mix is not in that time.
if [ "$MODE" = short ]; then
  SCALE=0.5
  SHORT_TASKS="colour_mcq count_short position_mcq"
  SHORT_MIX="demo_colour_mcq_train:1,demo_count_short_train:1,demo_position_mcq_train:1"
  STAGE_KEYS=("steps=20" "steps=400 data.batch_size=32 data.datamix=$SHORT_MIX"
              "steps=100 data.batch_size=32 data.datamix=$SHORT_MIX")
else
  SCALE=1.0
  STAGE_KEYS=("" "" "")
fi

# --- 2. data --------------------------------------------------------------------------------------------------
T=$SECONDS
DATA="$OUT/data"
say "writing the demo dataset to $DATA (scale $SCALE)"
rm -rf "$DATA"
"$PLM" data make-demo --out "$DATA" --scale "$SCALE" 2>"$OUT/make-demo.log" | tail -n 2
T_DATA=$(elapsed $T)
DATA_KEYS=(data.registry="$DATA/datasets.yaml" data.tokenizer_path="$DATA/tokenizer.model")

# --- 3. the three stages ----------------------------------------------------------------------------------------
# Each stage starts from the previous one's last step folder, consolidated as PLM's release layout
# (params.json + consolidated.pth/.safetensors), as the paper's recipes chain their stages.
T_STAGE=()
INIT=()
for s in 1 2 3; do
  T=$SECONDS
  dump="$OUT/stage$s"
  rm -rf "$dump"
  read -r -a keys <<< "${STAGE_KEYS[$((s - 1))]}"
  say "stage $s: plm train recipes/demo/stage$s.yaml dump_dir=$dump ${keys[*]} ${INIT[*]}"
  "$PLM" train "recipes/demo/stage$s.yaml" dump_dir="$dump" "${DATA_KEYS[@]}" "${keys[@]}" "${INIT[@]}" 2>&1 | grep -E 'step [0-9]+/|initialised|model parameters|finished' | sed 's/^\[0\] INFO [^ ]* [^ ]* //'
  step_dir="$(ls -d "$dump"/checkpoints/[0-9]* | sort | tail -n 1)"
  "$PLM" consolidate "$step_dir" >/dev/null
  INIT=(checkpoint.init_ckpt_path="$step_dir")
  T_STAGE+=($(elapsed $T))
done
CKPT="$step_dir"

# --- 4. evaluation on the held-out test split ---------------------------------------------------------------------
T=$SECONDS
[ "$MODE" = short ] && TASKS="$SHORT_TASKS" || TASKS="$("$PY" -c 'import json,sys; print(" ".join(t for t, v in json.load(open(sys.argv[1]))["tasks"].items()
                                            if v["answer_type"] != "caption"))' "$DATA/tasks.json")"
EVAL_DATA=()
for t in $TASKS; do EVAL_DATA+=(--data "$DATA/test/$t.jsonl"); done
say "plm eval on the test split: $TASKS"
"$PLM" eval --ckpt "$CKPT" "${EVAL_DATA[@]}" --media-root "$DATA" --out "$OUT/results.json" \
  --predictions "$OUT/predictions.jsonl" --batch-size 16 --max-gen-len 16 2>&1 | grep -v '^\[0\] INFO' || true
[ -f "$OUT/results.json" ] || { echo "demo.sh: plm eval wrote no $OUT/results.json" >&2; exit 1; }
T_EVAL=$(elapsed $T)

# --- 5. one image and one video question ----------------------------------------------------------------------
T=$SECONDS
ask() {  # task: the first test sample's question and media, through plm generate
  "$PY" - "$DATA" "$1" <<'EOF'
import json, os, sys
data, task = sys.argv[1], sys.argv[2]
s = json.loads(open(os.path.join(data, "test", task + ".jsonl")).readline())
q = s["conversations"][0]["value"].replace("<image>\n", "").replace("<video>\n", "")
media = ["--media-type", "video", "--media-path", os.path.join(data, s["video"])] if "video" in s else \
        ["--media-path", os.path.join(data, s["image"])]
print("\0".join([q] + media + [str(s["answer"])]), end="\0")
EOF
}
for t in position_mcq direction_mcq; do
  mapfile -d '' -t args < <(ask "$t")
  n=${#args[@]}
  say "plm generate ($t, expected answer: ${args[$((n - 1))]})"
  "$PLM" generate --ckpt "$CKPT" --question "${args[0]}" "${args[@]:1:$((n - 2))}" --max-gen-len 16 2>/dev/null
done
T_GEN=$(elapsed $T)

# --- 6. curves and summary ------------------------------------------------------------------------------------
"$PY" scripts/plot_metrics.py --out "$OUT/curves.png" "$OUT/stage1" "$OUT/stage2" "$OUT/stage3"
TOTAL=$(elapsed $START)
"$PY" - "$OUT/results.json" "$DATA/tasks.json" "$MODE" "$TOTAL" \
  "build ${T_BUILD}s, data ${T_DATA}s, stage 1 ${T_STAGE[0]}s, stage 2 ${T_STAGE[1]}s, stage 3 ${T_STAGE[2]}s, eval ${T_EVAL}s, generate ${T_GEN}s" <<'EOF'
import json, sys
results, tasks = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["tasks"]
mode, seconds, times = sys.argv[3], int(sys.argv[4]), sys.argv[5]
accuracy, chance = {}, {}
print(f"\n{'task':<18} {'metric':<12} {'test':>7} {'chance':>7}")
for task, spec in tasks.items():
    if task not in results:
        continue
    metric = next(m for m in ("accuracy", "exact_match", "mean_recall") if m in results[task])
    accuracy[task], chance[task] = round(results[task][metric], 4), round(spec["chance"], 4)
    print(f"{task:<18} {metric:<12} {accuracy[task]:>7.1%} {chance[task]:>7.1%}")
print(f"\ntime: {times}; total {seconds}s\n")
print(json.dumps({"demo": mode, "accuracy": accuracy, "chance": chance, "seconds": seconds}))
EOF
