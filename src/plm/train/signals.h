// Preemption (docs/reference.md 5.2 step 10.8, 7): SIGTERM, SIGUSR1 and SIGUSR2 ask the trainer to save a checkpoint at
// the end of the current micro-batch and exit 0. Under SLURM, SIGUSR2 (sbatch --signal=USR2@120, the preemption
// warning) also requeues the job, as PLM does.
#pragma once

namespace plm::train {

/// Installs the handlers (async-signal-safe: they only set a flag). Idempotent.
void install_stop_signals();

/// The signal number received, 0 when none.
int stop_signal();

}  // namespace plm::train
