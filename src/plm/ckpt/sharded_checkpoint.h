// A fully sharded run's checkpoints (ckpt/sharded.h has the folder layout): what each rank writes, and how any
// world size reads a checkpoint back into its shards. Checkpoints of single-process or no_shard runs
// (model.safetensors with PLM's names) load into a sharded run too, and sharded ones into those (as_plain()).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "plm/ckpt/checkpoint_store.h"
#include "plm/ckpt/sharded.h"
#include "plm/common/named_tensors.h"
#include "plm/dist/flat_layout.h"

namespace plm::ckpt {

/// This rank's part of a checkpoint: its model, optimizer and extra shard files. `shards` are this rank's shards
/// (written as fp32) of `layout`'s units (by unit name, in layout order), `optimizer_state` the AdamW state of its
/// trainable shards ("<unit>.exp_avg", "<unit>.exp_avg_sq", "<unit>.step"), `extra` its partly accumulated
/// gradients "grad.<unit>". Rank 0 also writes shards.json and the `texts` (params.json, train_state.json, ...).
RankFiles sharded_checkpoint_files(const dist::ShardLayout& layout, const NamedTensors& shards,
                                   const NamedTensors& optimizer_state, TensorMap extra, int rank,
                                   std::vector<std::pair<std::string, std::string>> texts);

/// What restore_sharded() read besides the shards.
struct ShardedRestore {
  NamedTensors optimizer_state;  // for AdamW::load_state: this rank's part, resharded
  /// "grad.<unit>" (resharded) when it was saved inside an accumulation window.
  TensorMap extra;
};

/// Loads checkpoint `dir` (sharded with any world size, or plain) into this rank's `shards` of `layout` (the
/// tensors are written in place) and returns the rest. Throws CheckpointError naming the folder when its units or
/// parameters differ from `layout`'s.
ShardedRestore restore_sharded(const std::string& dir, const dist::ShardLayout& layout, const NamedTensors& shards,
                               int rank);

/// A sharded checkpoint as a single process's contents: full named parameters, per-parameter AdamW state,
/// the full partly accumulated gradients; params.json, train_state.json and lora_base.json as they are.
CheckpointContents as_plain(const std::string& dir);

}  // namespace plm::ckpt
