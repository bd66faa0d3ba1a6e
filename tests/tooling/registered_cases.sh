#!/usr/bin/env bash
# Checks that ctest runs every Catch2 test case exactly once: for each test binary, the number of cases it lists
# equals the number of ctest entries named "<binary>:...". A name that the discovery mangles (a ';' splits it in
# two) or a case that is never registered shows up as a difference.
# Usage: tests/tooling/registered_cases.sh BUILD_DIR BINARY...
set -uo pipefail
build="$1"; shift
listing="$(ctest --test-dir "$build" -N)" || { echo "FAIL: ctest -N failed in $build"; exit 1; }
failures=0
for bin in "$@"; do
  name="$(basename "$bin")"
  cases=$("$bin" --list-test-names-only | grep -c .)
  entries=$(grep -cE "Test +#[0-9]+: ${name}:" <<<"$listing")
  echo "$name: $cases test cases, $entries ctest entries"
  if [ "$cases" -ne "$entries" ]; then
    echo "FAIL: $name lists $cases test cases but ctest has $entries entries for it"
    failures=$((failures + 1))
  fi
done
exit $((failures > 0))
