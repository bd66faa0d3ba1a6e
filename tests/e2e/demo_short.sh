#!/usr/bin/env bash
# `scripts/demo.sh --short` end to end: make-demo, the three chained stages, consolidate, eval, generate and the
# plot, then checks the JSON summary: colour_mcq, count_short and position_mcq (the tasks the short run trains on)
# well above their chance of 0.25 on the held-out test split, the three stages' checkpoints, and the PNG.
# Usage: tests/e2e/demo_short.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"

scripts/demo.sh --short --plm "$PLM" --out "$tmp/demo" > "$tmp/demo.log" 2>&1 || { tail -30 "$tmp/demo.log"; fail "scripts/demo.sh --short exited non-zero"; }
last="$(tail -n 1 "$tmp/demo.log")"
echo "$last"
"$PY" - "$last" <<'PY' || fail "the summary line does not show learning: $last"
import json, sys
j = json.loads(sys.argv[1])
assert j["demo"] == "short", j
for task in ("colour_mcq", "count_short", "position_mcq"):
    acc, chance = j["accuracy"][task], j["chance"][task]
    assert chance == 0.25 and acc >= 0.7, f"{task} accuracy {acc} is not well above chance {chance}"
PY
for s in 1 2 3; do
  ls "$tmp"/demo/stage$s/checkpoints/*/consolidated.safetensors >/dev/null 2>&1 || fail "stage $s has no consolidated checkpoint"
done
grep -q "initialised from $tmp/demo/stage2/checkpoints/" "$tmp/demo/stage3/train.log" || fail "stage 3 did not start from stage 2"
[ -s "$tmp/demo/curves.png" ] || fail "no curves.png"
grep -q "==== prompt 1" "$tmp/demo.log" || fail "plm generate printed no answer"
finish demo_short
