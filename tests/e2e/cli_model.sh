#!/usr/bin/env bash
# `plm model` end to end. The decoder sizes are Meta's published Llama 3.2-1B / 3.2-3B / 3.1-8B parameter counts.
# Usage: tests/e2e/cli_model.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
check_decoder() {  # model expected_decoder_params
  local out; out="$("$PLM" model info "configs/models/$1.yaml")" || { fail "model info $1 failed"; return; }
  grep -q "^decoder *$2 " <<<"$out" || fail "$1 decoder count is not $2: $out"
  grep -q "^total " <<<"$out" || fail "$1: no total line"
}
check_decoder plm_1b 1,235,814,400
check_decoder plm_3b 3,212,749,824
check_decoder plm_8b 8,030,261,248
# stage 1 freezing: only the projector trains
out="$("$PLM" model info recipes/stage1_warmup/plm_1b.yaml)"
proj="$(awk '/^projector/{print $2}' <<<"$out")"; train="$(awk '/^trainable/{print $2}' <<<"$out")"
[ -n "$proj" ] && [ "$proj" = "$train" ] || fail "stage 1 trainable ($train) is not the projector ($proj)"
"$PLM" model info configs/models/plm_1b.yaml model.dimm=3 >/dev/null 2>&1 && fail "a typo in an override was accepted"
finish cli_model
