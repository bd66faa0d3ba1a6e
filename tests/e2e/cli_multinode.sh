#!/usr/bin/env bash
# Multi-node training tested on one host: two "nodes" of two Gloo CPU ranks each on the loopback address give the
# 1-rank losses (fp32, full_shard, the same global batch of 4) when started by torchrun (--nnodes 2 --node-rank 0/1,
# its static rendezvous), by `plm launch --nnodes 2 --node-rank 0/1`, by scripts/slurm/train.sbatch (its srun
# replaced by one that starts the four tasks with SLURM's variables, as srun on two nodes would) and by
# docs/deploy/slurm_torchrun.sbatch (srun starting one torchrun per "node"); a node that dies
# (its launcher and workers SIGKILLed mid-run) ends the other node's ranks within distributed.timeout_s, and that
# node's launcher names the lost ranks and their node; with data.global_batch_size, a job that lost a node and is
# restarted on one rank resumes from the last checkpoint with the 1-rank losses.
# Usage: tests/e2e/cli_multinode.sh path/to/plm   (run from the repository root)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_init "$1"
cd "$tmp"
make_toy_data "$tmp" || { echo "FAIL: could not make data"; exit 1; }
toy_recipe recipe.yaml 1 1 <<YAML
name: multinode_e2e
steps: 8
optim: {lr: 0.003, warmup: 2, lr_min_ratio: 0.1, loss_normalization: global_tokens}
logging: {freq: 1}
checkpoint: {dump: {every: 4, keep: 0}}
distributed: {model_dtype: fp32, fsdp_type: full_shard, timeout_s: 60}
model: {max_seqlen: 96}
YAML
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
compare() {  # RUN: its per-step losses equal the 1-rank run's within 1e-5 relative
  "$PY" - one "$1" <<'PY' || fail "losses of $1 differ from one rank's"
import json, sys
def losses(run):
    return {r["global_step"]: r["loss/token_mean"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "loss/token_mean" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(a) == sorted(b) == list(range(1, 9)), (sorted(a), sorted(b))
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
print(f"{sys.argv[2]} (2 nodes x 2 ranks) vs 1 rank: 8 steps, losses within {worst:.1e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
"$PLM" train recipe.yaml dump_dir=one data.batch_size=4 > one.log 2>&1 || { tail -3 one.log; fail "1-rank run"; }

# 1. torchrun, two nodes of two ranks (static rendezvous on node 0's address).
torchrun="$ROOT/.venv/bin/torchrun"
port=$(free_port)
for node in 1 0; do
  "$torchrun" --nnodes 2 --node-rank $node --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "$port" \
    --no-python "$PLM" train recipe.yaml dump_dir=torchrun > torchrun$node.log 2>&1 &
  pids[$node]=$!
done
wait "${pids[0]}" || fail "torchrun node 0: $(tail -2 torchrun0.log)"
wait "${pids[1]}" || fail "torchrun node 1: $(tail -2 torchrun1.log)"
compare torchrun

# 2. plm launch's equivalent.
port=$(free_port)
for node in 1 0; do
  "$PLM" launch --nnodes 2 --node-rank $node --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "$port" \
    recipe.yaml dump_dir=launch > launch$node.log 2>&1 &
  pids[$node]=$!
done
wait "${pids[0]}" || fail "plm launch node 0: $(tail -2 launch0.log)"
wait "${pids[1]}" || fail "plm launch node 1: $(tail -2 launch1.log)"
grep -q "ranks 2-3 of 4, node 1 of 2" launch1.log || fail "plm launch does not say which ranks node 1 runs"
compare launch

# 3. The sbatch script's path: SLURM's variables only (srun on 2 nodes x 2 tasks, the job's first host 127.0.0.1;
#    the port is PLM's function of the job id: find a job id whose port is free).
mkdir -p fakebin
cat > fakebin/srun <<'SRUN'
#!/usr/bin/env bash
# srun for two nodes of two tasks on this host: drops srun's options, starts the tasks with SLURM's variables.
while [[ "${1:-}" == --* ]]; do shift; done
for r in 0 1 2 3; do
  SLURM_PROCID=$r SLURM_LOCALID=$((r % 2)) SLURM_NODEID=$((r / 2)) "$@" &
done
status=0
for job in $(jobs -p); do wait "$job" || status=$?; done
exit $status
SRUN
chmod +x fakebin/srun
job=$("$PY" - <<'PY'
import random, socket
for job in range(424200, 424300):
    port = random.Random(job).randint(20000, 60000)
    try:
        s = socket.socket(); s.bind(("127.0.0.1", port)); s.close(); print(job); break
    except OSError:
        pass
PY
)
PATH="$tmp/fakebin:$PATH" SLURM_JOB_ID=$job SLURM_NTASKS=4 SLURM_NNODES=2 SLURM_JOB_NODELIST=127.0.0.1 \
  SLURM_SUBMIT_DIR="$tmp" PLM_BIN="$PLM" bash "$ROOT/scripts/slurm/train.sbatch" recipe.yaml dump_dir=slurm \
  > slurm.log 2>&1 || fail "train.sbatch: $(tail -2 slurm.log)"
compare slurm

# 3b. docs/deploy/slurm_torchrun.sbatch: srun starts one torchrun per node (static rendezvous, node rank from
#     SLURM_NODEID, the first host from scontrol).
cat > fakebin/srun <<'SRUN'
#!/usr/bin/env bash
# srun for two nodes of one task each on this host.
while [[ "${1:-}" == --* ]]; do shift; done
for node in 0 1; do SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" & done
status=0
for job in $(jobs -p); do wait "$job" || status=$?; done
exit $status
SRUN
printf '#!/usr/bin/env bash\necho 127.0.0.1\n' > fakebin/scontrol
chmod +x fakebin/srun fakebin/scontrol
PATH="$tmp/fakebin:$PATH" SLURM_JOB_ID=1 SLURM_NNODES=2 SLURM_JOB_NODELIST=127.0.0.1 SLURM_SUBMIT_DIR="$tmp" \
  PLM_BIN="$PLM" TORCHRUN="$ROOT/.venv/bin/torchrun" GPUS_PER_NODE=2 MASTER_PORT=$(free_port) \
  bash "$ROOT/docs/deploy/slurm_torchrun.sbatch" recipe.yaml dump_dir=slurm_torchrun > slurm_torchrun.log 2>&1 ||
  fail "slurm_torchrun.sbatch: $(tail -2 slurm_torchrun.log)"
compare slurm_torchrun

# Starts a 2-node x 2-rank plm launch of dump_dir=NAME with the overrides in the background, node 1 in a process
# group of its own (so that one kill takes the whole node): start_nodes NAME OVERRIDES... (sets node0, node1;
# logs NAME0.log, NAME1.log).
start_nodes() {
  local name=$1 port; shift
  port=$(free_port)
  setsid "$PLM" launch --nnodes 2 --node-rank 1 --nproc-per-node 2 --master-port "$port" recipe.yaml \
    dump_dir="$name" "$@" > "${name}1.log" 2>&1 &
  node1=$!
  "$PLM" launch --nnodes 2 --node-rank 0 --nproc-per-node 2 --master-port "$port" recipe.yaml dump_dir="$name" "$@" \
    > "${name}0.log" 2>&1 &
  node0=$!
}

# 4. A node dies mid-run: node 1's launcher and workers are SIGKILLed once training is under way; node 0's ranks end
#    within distributed.timeout_s and its launcher names the lost ranks.
start_nodes dies steps=100000 distributed.timeout_s=10 checkpoint.dump.every=100000
wait_for $node0 grep -Eqs '"global_step": ?2[,}]' dies/metrics.jsonl || fail "the 2-node run did not train"
killed_at=$(date +%s.%N)
kill -9 -- -"$node1" 2>/dev/null
wait $node0
rc=$?
echo "node 0 ended $("$PY" -c "import time; print(f'{time.time() - $killed_at:.1f}')") s after node 1 was killed (exit $rc)"
[ "$rc" -ne 0 ] || fail "node 0 ended successfully after node 1 died"
grep -Eq "failed: .*rank [23] \(node 1\) was lost" dies0.log || fail "node 0 does not name the lost ranks: $(tail -2 dies0.log)"
grep "failed:" dies0.log | head -1

# 5. A job that loses a node and restarts on fewer ranks: 2 nodes x 2 ranks with data.global_batch_size=4, node 1
#    SIGKILLed after the step-4 checkpoint (node 0 then fails), the same command restarted as one rank resumes from
#    it with data.batch_size 4: the 8 steps' losses are the 1-rank run's (same global batch, same data order).
GLOBAL=(data.global_batch_size=4 distributed.timeout_s=10)
start_nodes shrunk "${GLOBAL[@]}"
wait_for $node0 test -f shrunk/checkpoints/0000000004/manifest.json || fail "no step-4 checkpoint on 2 nodes"
kill -9 -- -"$node1" 2>/dev/null
wait $node0
rm -rf shrunk/checkpoints/0000000008  # in case the run got there before the kill: resume from step 4 regardless
"$PLM" train recipe.yaml dump_dir=shrunk "${GLOBAL[@]}" > shrunk_resumed.log 2>&1 || fail "1-rank restart: $(tail -2 shrunk_resumed.log)"
grep -q "resumed from .*0000000004" shrunk_resumed.log || fail "the restart did not resume from step 4"
grep -q "data.batch_size 4 per rank: data.global_batch_size 4 over 1 ranks" shrunk_resumed.log ||
  fail "the restart does not derive data.batch_size from the global batch"
compare shrunk
"$PLM" train recipe.yaml dump_dir=odd data.global_batch_size=5 grad_acc_steps=2 > odd.log 2>&1 && fail "an uneven global batch ran"
grep -q "data.global_batch_size is 5, which 1 ranks x 2 grad_acc_steps cannot split evenly" odd.log ||
  fail "no sentence for an uneven global batch: $(tail -1 odd.log)"
finish cli_multinode
