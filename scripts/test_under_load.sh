#!/usr/bin/env bash
# Runs the test command (scripts/test.sh, with any ctest arguments) while LOAD_PER_CORE CPU-bound busy loops per core
# (default 2) run throughout, as on a busy CI machine or a shared workstation, and reports the suite's time. A test
# that decides its result by a wall-clock bound fails here; the suite must pass.
#   scripts/test_under_load.sh                 # the whole suite under load
#   scripts/test_under_load.sh -R '^e2e: '     # only the end-to-end tests
set -euo pipefail
cd "$(dirname "$0")/.."
per_core="${LOAD_PER_CORE:-2}"
n=$(( per_core * $(nproc) ))
pids=()
cleanup() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$n"); do
  ( trap - EXIT; while :; do :; done ) &
  pids+=($!)
done
echo "[load] $n busy loops ($per_core per core on $(nproc) cores)"
start=$SECONDS
rc=0
scripts/test.sh "$@" || rc=$?
echo "[load] scripts/test.sh $* exited $rc after $((SECONDS - start)) s with $n busy loops running"
exit $rc
