// `plm train`: one PLM stage from a recipe (docs/reference.md 5.2), on one process or as one rank of several
// (torchrun, SLURM, plm launch: dist/env.h). How the ranks share parameters, gradients and optimizer state is the
// data-parallel strategy's business (train/data_parallel.h: replicated for no_shard, fully sharded for full_shard);
// the loop is the same for both. Each rank reads its slice of every global batch. Per optimizer step:
//   1. read the step's grad_acc_steps micro-batches (their loss-token counts are needed before the first backward
//      under global_tokens);
//   2. forward and backward of each micro-batch: loss (fp32 cross-entropy, mean over its loss tokens) times its
//      scale, backward in the compute dtype, its gradients added into the fp32 trainable tensors;
//   3. finish the step: reduce the gradients over ranks, global-norm clipping, the NaN/inf guard, AdamW at
//      lr(k) = optim.lr * m(k - 1) (so the first update runs at lr 0, as PLM's LambdaLR does), publish;
//   4. metrics every logging.freq steps, a checkpoint every checkpoint.dump.every / checkpoint.eval.every steps.
// Loss normalisation (optim.loss_normalization):
//   reference:     loss_i / (grad_acc_steps x ranks), loss_i = the micro-batch's token mean (PLM, whose FSDP
//                  averages over ranks; micro-batches with fewer loss tokens weigh more per token);
//   global_tokens: sum of the micro-batch's token losses / the loss tokens of the whole step on all ranks, so
//                  batch 4 x 1 step, 2 x 2, 1 x 4 and 2 ranks x 2 give the same update.
// Several ranks agree on every decision: the logged loss and NaN check are reduced over ranks, a stop signal on any
// rank stops all at the next step boundary, rank 0 picks the checkpoint to resume from.
// Resume is exact: a checkpoint holds the fp32 weights, AdamW state, the step and acc_step, the data position and,
// when saved inside an accumulation window (a stop signal), the partly accumulated fp32 gradients with the data
// position of the window's start; the window's first acc_step micro-batches are then read again but not recomputed.
// No generator state is needed: a step draws no random numbers from a generator (DropPath's masks are a function of
// (seed, step, each sample's global stream slot): model/model_inputs.h), so a resume on any device or world size
// draws the masks of the uninterrupted run. Each strategy writes its own layout (a full_shard run per-rank shards that any world
// size resumes from, a no_shard run rank 0's copy in the single-process layout), and either layout resumes the other.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "plm/config/args.h"
#include "plm/model/perception_lm.h"
#include "plm/train/adamw.h"

namespace plm::train {

struct TrainOutcome {
  int64_t step = 0;
  bool stopped = false;    // by a signal or request_stop(), after saving
  std::string checkpoint;  // the last folder written ("" if none)
};

/// One PLM training stage from a recipe: owns the run's devices and ranks, data loader, model, data-parallel
/// strategy (train/data_parallel.h), optimizer, checkpoint store and metrics, from set-up (which resumes from the
/// newest complete checkpoint) through run() to the last save. One per process; every rank of a job builds one with
/// the same recipe.
class Trainer {
 public:
  /// Validates `args` for training (dump_dir set, dtype, tokenizer vs vocabulary), creates dump_dir with config.yaml
  /// and train.log, builds the data pipeline, the model (model.seed init, or checkpoint.init_ckpt_path /
  /// vision_model_path), freezing, mixed precision and AdamW, and resumes from the newest complete checkpoint under
  /// checkpoint.path (default dump_dir/checkpoints), reporting any it passes over. Throws config::ConfigError,
  /// ckpt::CheckpointError or text::TokenizerError with one sentence naming the key or file.
  explicit Trainer(config::TrainArgs args);
  ~Trainer();

  /// Trains until `steps`, saving on schedule and at the end. A stop signal (train/signals.h) or request_stop()
  /// saves at the end of the current micro-batch and returns with stopped = true. A non-finite loss or gradient
  /// norm throws std::runtime_error naming the step and samples under nan_policy abort (skip: the update is dropped
  /// and the run goes on).
  TrainOutcome run();

  /// Asks run() to save and return after the current micro-batch (thread-safe).
  void request_stop();

  /// Called after every micro-batch with (optimizer step, micro-batches done in this step); tests use it.
  std::function<void(int64_t step, int64_t acc_step)> on_micro_batch;

  model::PerceptionLMImpl& model();
  /// Every parameter's fp32 master value by name (a collective where they are sharded: call it on every rank).
  NamedTensors parameters() const;
  int64_t step() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace plm::train
