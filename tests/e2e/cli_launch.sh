#!/usr/bin/env bash
# `plm launch` and `plm dist check` end to end: local workers all-reduce over Gloo; a SIGKILLed worker ends the
# launch non-zero naming its rank; a worker's failing status comes back; signals reach the workers; torchrun from
# the wheel runs plm workers too.
# Usage: tests/e2e/cli_launch.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"

# Starts a launch in the background ($launcher: its pid).
start_launch() {
  : >"$tmp/out"; : >"$tmp/err"  # emptied here, not by the background job, so no step reads the last one's lines
  "$PLM" launch "$@" >>"$tmp/out" 2>>"$tmp/err" &
  launcher=$!
}
# Waits for the background launch to end (a hang is ended by ctest's TIMEOUT); rc = its exit status.
finish_launch() {
  wait "$launcher"; rc=$?
}

# Waits until $1 has $2 lines matching $3 (0), or the launch ended without them (1).
has_lines() { [ "$(grep -c "$3" "$1" 2>/dev/null)" -ge "$2" ]; }
wait_lines() { wait_for "$launcher" has_lines "$@"; }

# 1. A single process needs no launcher.
"$PLM" dist check >"$tmp/out" 2>"$tmp/err" || fail "dist check alone: $(cat "$tmp/err")"
grep -q "rank 0 of 1" "$tmp/out" || fail "dist check alone does not report rank 0 of 1"

# 2. Three workers: every rank sees the right sum.
"$PLM" launch --nproc-per-node 3 -- dist check --timeout-s 30 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 0 ] || fail "launch of 3 workers: exit $rc; stderr: $(head -c 800 "$tmp/err")"
[ "$(grep -c 'all_reduce ok: sum of ranks 3$' "$tmp/out")" -eq 3 ] || fail "not every rank checked out: $(cat "$tmp/out")"
for r in 0 1 2; do grep -q "rank $r of 3, local rank $r" "$tmp/out" || fail "rank $r did not report"; done

# 3. SIGKILL one worker: the launch stops the others, exits non-zero and names the rank.
start=$SECONDS
start_launch --nproc-per-node 3 --grace-s 5 -- dist check --timeout-s 5 --hold-s 60
if wait_lines "$tmp/out" 3 "pid "; then
  victim=$(sed -n 's/.*rank 1 of 3, local rank 1, pid \([0-9]*\),.*/\1/p' "$tmp/out")
  kill -9 "$victim"
else
  fail "the workers did not start: $(cat "$tmp/err")"
fi
finish_launch
echo "the launch ended $((SECONDS - start)) s after the start, the kill included"
[ "$rc" -eq 137 ] || fail "launch exited $rc, wanted 137 (128 + SIGKILL of rank 1)"
grep -q "plm launch: rank 1 (pid ${victim:-?}) was killed by signal 9 (SIGKILL)" "$tmp/err" ||
  fail "launch does not name the killed rank: $(cat "$tmp/err")"
grep -q "plm launch: failed: rank 1 was killed by signal 9" "$tmp/err" || fail "no final failure line: $(cat "$tmp/err")"

# 4. Signals are forwarded: SIGUSR2 (SLURM's preemption warning) reaches the workers, which dist check does not
#    handle, so they die of it and the launch reports that.
start_launch --nproc-per-node 2 -- dist check --timeout-s 30 --hold-s 60
if wait_lines "$tmp/out" 2 "pid "; then kill -USR2 "$launcher"; else fail "the workers did not start (4)"; fi
finish_launch
[ "$rc" -eq $((128 + 12)) ] || fail "SIGUSR2 to the launcher: exit $rc, wanted 140; stderr: $(cat "$tmp/err")"
grep -q "was killed by signal 12 (SIGUSR2)" "$tmp/err" || fail "SIGUSR2 did not reach the workers: $(cat "$tmp/err")"

# 5. A worker's own failure status is the launch's exit status; the default form runs `plm train`.
"$PLM" launch --nproc-per-node 2 /nonexistent/recipe.yaml >"$tmp/out" 2>"$tmp/err"; rc=$?
[ "$rc" -ne 0 ] || fail "launch of a train with a missing recipe exited 0"
grep -q 'workers of `plm train /nonexistent/recipe.yaml`' "$tmp/err" || fail "the default form does not run train"
grep -q "plm launch: failed: rank [01] exited with status $rc" "$tmp/err" || fail "no failure line: $(cat "$tmp/err")"

# 6. Usage errors.
"$PLM" launch --nproc-per-node 2 recipe.yaml --bogus >"$tmp/out" 2>"$tmp/err" && fail "an unknown option was accepted"
grep -q "unknown option --bogus" "$tmp/err" || fail "unknown option not named: $(cat "$tmp/err")"
"$PLM" launch --nproc-per-node 2 >"$tmp/out" 2>"$tmp/err" && fail "a launch without a command was accepted"

# 7. torchrun from the wheel starts plm workers (LOCAL_RANK detection).
torchrun="$(dirname "$(readlink -f "${PLM_PYTHON:-.venv/bin/python}")")/torchrun"
[ -x "$torchrun" ] || torchrun=.venv/bin/torchrun
if [ -x "$torchrun" ]; then
  "$torchrun" --standalone --nproc-per-node 2 --no-python "$PLM" dist check --timeout-s 30 \
    >"$tmp/out" 2>"$tmp/err"; rc=$?
  [ "$rc" -eq 0 ] || fail "torchrun: exit $rc; stderr: $(tail -c 800 "$tmp/err")"
  [ "$(grep -c 'all_reduce ok: sum of ranks 1$' "$tmp/out")" -eq 2 ] || fail "torchrun workers: $(cat "$tmp/out")"
  grep -q "torchrun launch" "$tmp/out" || fail "torchrun workers did not detect torchrun"
else
  echo "SKIP: no torchrun in .venv"
fi

finish cli_launch
