// A fully sharded run's checkpoints (ckpt/sharded.h has the folder layout): what each rank writes, and how any
// world size reads a checkpoint back into its shards. Checkpoints of single-process or no_shard runs
// (model.safetensors with PLM's names) load into a sharded run too, and sharded ones into those (as_plain()).
#pragma once

#include <string>

#include "plm/ckpt/sharded.h"
#include "plm/dist/fsdp.h"
#include "plm/train/adamw.h"
#include "plm/train/checkpoint_store.h"

namespace plm::train {

/// This rank's part of a checkpoint: its model, optimizer and extra shard files ("extra" holds `extra`: RNG
/// states, partly accumulated gradients "grad.<unit>"), and on rank 0 shards.json plus the `texts` (params.json,
/// train_state.json).
RankFiles sharded_checkpoint_files(const dist::ShardedModel& model, const AdamW& optimizer, ckpt::TensorMap extra,
                                   int rank, std::vector<std::pair<std::string, std::string>> texts);

/// Loads checkpoint `dir` (sharded with any world size, or plain) into this rank's shards and AdamW state.
/// Returns this rank's extra entries: "rng.cpu" when the checkpoint has one for this rank, and "grad.<unit>"
/// (resharded) when it was saved inside an accumulation window. Throws ckpt::CheckpointError naming the folder when
/// its units or parameters differ from the model's.
ckpt::TensorMap restore_sharded(const std::string& dir, const dist::ShardedModel& model, AdamW& optimizer, int rank);

/// A sharded checkpoint as a single process's contents: full named parameters, per-parameter AdamW state,
/// rank 0's RNG and full partly accumulated gradients; params.json and train_state.json as they are.
CheckpointContents as_plain(const std::string& dir);

}  // namespace plm::train
