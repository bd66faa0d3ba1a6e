#!/usr/bin/env bash
# Every libFuzzer harness (tests/fuzz/fuzz_*.cpp) in turn, each for SECONDS or RUNS inputs, whichever ends first,
# under ASan + UBSan (scripts/fuzz.sh run): the long runs that the CI smoke only samples. Prints one line per
# harness: inputs run, seconds, peak RSS, and "finding" with the artifact's path when libFuzzer wrote one.
# Usage: bench/fuzz.sh [SECONDS=1800] [RUNS=1000000] [NAME...]   (logs in build-fuzz/logs/NAME.log)
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-1800}"; runs="${2:-1000000}"; shift 2 2>/dev/null || shift $#
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(config sample tokenizer safetensors pickle image video)
mkdir -p build-fuzz/logs
status=0
for name in "${names[@]}"; do
  log="build-fuzz/logs/$name.log"
  scripts/fuzz.sh run "$name" "$seconds" "$runs" > "$log" 2>&1; rc=$?
  done_line=$(grep -E "^Done [0-9]+ runs" "$log" | tail -1)
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  artifact=$(sed -n "s/.*Test unit written to \(.*\)/\1/p" "$log" | tail -1)
  if [ "$rc" -eq 0 ] && [ -z "$artifact" ]; then
    echo "$name: ${done_line:-$executed inputs}, peak RSS ${peak:-?} MB, no finding"
  else
    echo "$name: finding after ${executed:-?} inputs (exit $rc): ${artifact:-see $log}"
    status=1
  fi
done
exit $status
