// The launch environment (docs/reference.md 7): who this process is in the job and where the rendezvous is.
// Three launchers, detected in PLM's order:
//   torchrun / `plm launch`  LOCAL_RANK is set: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
//   SLURM (srun)             SLURM_JOB_ID and SLURM_PROCID set, no LOCAL_RANK: SLURM_PROCID, SLURM_LOCALID,
//                            SLURM_NTASKS; master = first host of SLURM_JOB_NODELIST, port from the job id;
//   single process           anything else: rank 0 of 1 on 127.0.0.1.
// Deviation from PLM: SLURM needs SLURM_PROCID too (PLM looks at SLURM_JOB_ID alone), so `plm train` typed
// inside an salloc shell, which has a job id but no task, runs as a single process instead of failing.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "plm/common/user_error.h"

namespace plm::dist {

/// A launch variable that is missing or malformed; the message names the variable and its value.
struct LaunchEnvError : UserError {
  using UserError::UserError;
};

enum class Launcher { single, torchrun, slurm };

/// "single", "torchrun" or "slurm".
const char* launcher_name(Launcher l);

/// Who this process is. Invariants: 0 <= rank < world_size, 0 <= local_rank.
struct LaunchEnv {
  Launcher launcher = Launcher::single;
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 only for a single process, which needs no rendezvous
  // torchrun's agent already hosts the TCPStore on MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True):
  // every rank connects as a client, as torch's env:// rendezvous does (a new store per restart, so no prefix).
  bool agent_store = false;
};

/// Reads one environment variable; std::nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

/// The launch environment described by `get` (testable without touching the process environment).
/// Throws LaunchEnvError naming the variable when a required one is missing or not a valid number/hostlist.
LaunchEnv launch_env(const EnvLookup& get);

/// The launch environment of this process (getenv).
LaunchEnv launch_env();

/// Expands a SLURM hostlist as `scontrol show hostnames` does: "node[01-03,07],gpu5" ->
/// node01 node02 node03 node07 gpu5. Ranges keep the zero padding of their lower bound; several bracket groups in
/// one name expand as a product, leftmost slowest ("r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2).
/// Throws LaunchEnvError on unbalanced brackets, an empty name or a descending range.
std::vector<std::string> expand_hostlist(const std::string& hostlist);

/// PLM's master port for a SLURM job: Python's `random.Random(job_id).randint(20000, 60000)`, reproduced exactly
/// (CPython's MT19937 seeded by init_by_array over the 32-bit words of |job_id|, randint by rejection sampling
/// on getrandbits(16)), so plm and PLM ranks of one job would meet on the same port.
int slurm_master_port(int64_t job_id);

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick), for local rendezvous.
int find_free_port();

}  // namespace plm::dist
