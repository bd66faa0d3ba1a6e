#!/usr/bin/env bash
# The `plm` binary end to end: --version, --help, config print/validate, exit codes.
# Usage: tests/e2e/cli_config.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
expect_rc() {  # expected_rc description command...
  local want="$1" what="$2"; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  [ "$rc" -eq "$want" ] || fail "$what: exit $rc, wanted $want; stderr: $(head -c 400 "$tmp/err")"
}

expect_rc 0 "--version" "$PLM" --version
grep -q "^LibTorch 2\." "$tmp/out" || fail "--version does not print the LibTorch version"
grep -q "^CUDA " "$tmp/out" || fail "--version does not say whether CUDA is compiled in"
expect_rc 0 "--help" "$PLM" --help
grep -q "config" "$tmp/out" || fail "--help does not list the config command"
expect_rc 0 "config --help" "$PLM" config --help
grep -q "validate" "$tmp/out" || fail "config --help does not list validate"
expect_fail() {  # description command...: any non-zero exit
  local what="$1"; shift
  "$@" >"$tmp/out" 2>"$tmp/err" && fail "$what: exit 0, wanted an error"
}
expect_fail "no subcommand" "$PLM"
expect_fail "unknown subcommand" "$PLM" fly

# print with an override: optim.lr changes, the rest stays the recipe's
expect_rc 0 "config print" "$PLM" config print recipes/stage3_sft/plm_1b.yaml optim.lr=1e-5
cp "$tmp/out" "$tmp/printed.yaml"
grep -A1 '^optim:' "$tmp/printed.yaml" | grep -q '  lr: 1e-05' || fail "optim.lr is not 1e-05 in the printed config"
grep -q '^steps: 21000$' "$tmp/printed.yaml" || fail "steps is not the recipe's 21000"
grep -q '  max_seqlen: 11520$' "$tmp/printed.yaml" || fail "max_seqlen is not 11520"
[ -s "$tmp/err" ] && fail "config print wrote to stderr for a clean recipe: $(cat "$tmp/err")"

# printing the printed config gives the same text (fixpoint through the binary)
expect_rc 0 "config print of printed" "$PLM" config print "$tmp/printed.yaml"
cmp -s "$tmp/out" "$tmp/printed.yaml" || fail "print -> load -> print is not a fixpoint"

# a typo: non-zero, names the key, suggests the right one
expect_rc 2 "typo override" "$PLM" config print recipes/stage3_sft/plm_1b.yaml optim.lrr=1
grep -q "lrr" "$tmp/err" && grep -q "did you mean 'optim.lr'" "$tmp/err" || fail "typo error: $(cat "$tmp/err")"
[ -s "$tmp/out" ] && fail "config print printed a config despite an error"

# validate: all nine recipes pass; a bad value fails with exit 2 and the key
for r in recipes/stage1_warmup recipes/stage2_midtrain recipes/stage3_sft; do
  for m in plm_1b plm_3b plm_8b; do expect_rc 0 "validate $r/$m" "$PLM" config validate "$r/$m.yaml"; done
done
expect_rc 2 "validate bad value" "$PLM" config validate recipes/stage1_warmup/plm_1b.yaml optim.scheduler=cosin
grep -q "optim.scheduler" "$tmp/err" || fail "validate does not name optim.scheduler: $(cat "$tmp/err")"
expect_rc 2 "validate bad type" "$PLM" config validate recipes/stage1_warmup/plm_1b.yaml steps=lots
grep -q "expects an integer" "$tmp/err" || fail "type error not explained: $(cat "$tmp/err")"

# unused PLM keys are reported once, on stderr, and the YAML on stdout stays clean
expect_rc 0 "ignored key" "$PLM" config print recipes/stage1_warmup/plm_1b.yaml distributed.compile=true
[ "$(grep -c "distributed.compile" "$tmp/err")" -eq 1 ] || fail "distributed.compile=true not reported exactly once"
grep -q "^  compile: true$" "$tmp/out" || fail "the ignored key is not kept in the printed config"

# a recipe that does not exist
expect_fail "missing recipe" "$PLM" config print recipes/nope.yaml
grep -q "recipes/nope.yaml" "$tmp/err" || fail "a missing recipe is not named: $(cat "$tmp/err")"

finish cli_config
