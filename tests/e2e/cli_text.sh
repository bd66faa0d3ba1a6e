#!/usr/bin/env bash
# `plm text encode|decode` end to end (the --jsonl modes are covered by tests/parity/tokenizer_parity.py), and out
# of memory ending in a sentence.
# Usage: tests/e2e/cli_text.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
TOK=tests/fixtures/llama3/tokenizer.model

out="$(printf 'This is a test sentence.' | "$PLM" text encode --tokenizer "$TOK")"
[ "$out" = "2028 374 264 1296 11914 13" ] || fail "encode gave '$out'"
out="$(printf 'line one\nline two\n' | "$PLM" text encode --tokenizer "$TOK" | "$PLM" text decode --tokenizer "$TOK")"
[ "$out" = "$(printf 'line one\nline two\n')" ] || fail "encode | decode is not the identity: '$out'"
out="$(printf '"a"\n"<|image|>b"\n' | "$PLM" text encode --tokenizer "$TOK" --jsonl)"
[ "$out" = "$(printf '64\n128002 65')" ] || fail "--jsonl gave '$out'"
err="$(echo '1 2 999999' | "$PLM" text decode --tokenizer "$TOK" 2>&1 >/dev/null)"; rc=$?
[ $rc -eq 2 ] && [[ "$err" == *"token id 999999 is outside the vocabulary"* ]] || fail "bad id: rc=$rc '$err'"
err="$(echo '1 two' | "$PLM" text decode --tokenizer "$TOK" 2>&1 >/dev/null)"; rc=$?
[ $rc -eq 2 ] && [[ "$err" == *"'two' is not a token id"* ]] || fail "non-number: rc=$rc '$err'"
err="$(echo 'not json' | "$PLM" text encode --tokenizer "$TOK" --jsonl 2>&1 >/dev/null)"; rc=$?
[ $rc -eq 2 ] && [[ "$err" == *"stdin line 1 is not JSON"* ]] || fail "bad JSON: rc=$rc '$err'"
err="$(echo x | "$PLM" text encode --tokenizer /nonexistent 2>&1 >/dev/null)"; rc=$?
[ $rc -ne 0 ] && [[ "$err" == *"/nonexistent"* ]] || fail "missing tokenizer: rc=$rc '$err'"

# Out of memory is a sentence and exit 1, never std::terminate (SIGABRT): 1.5 GB on stdin under a 2.5 GB address
# space limit (LibTorch's mappings take about 1 GB of it).
err="$( (ulimit -v 2500000; head -c 1500000000 /dev/zero | tr '\0' a | "$PLM" text encode --tokenizer $TOK) 2>&1 >/dev/null)"
rc=$?
[ $rc -eq 1 ] && [[ "$err" == *"out of memory"* ]] || fail "out of memory: rc=$rc '$(tail -c 300 <<<"$err")'"

finish cli_text
