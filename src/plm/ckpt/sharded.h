// Sharded checkpoints: a fully sharded run keeps each unit's parameters as one flat fp32 buffer split over the
// ranks (dist/flat_layout.h has the layout). A checkpoint folder of such a run holds, beside the single-process
// files' params.json and train_state.json:
//   shards.json                                  the layout (world size, units, parameter names and shapes)
//   model.shard-RRRRR-of-WWWWW.safetensors       rank R's fp32 shard of every unit, by unit name
//   optimizer.shard-RRRRR-of-WWWWW.safetensors   rank R's AdamW state: "<unit>.exp_avg", "<unit>.exp_avg_sq",
//                                                "<unit>.step" (0-d)
//   extra.shard-RRRRR-of-WWWWW.safetensors       rank R's partly accumulated gradients "grad.<unit>"
// Any world size reads it back: read_flat_range() assembles a range of a unit's flat buffer from the old shards
// (resharding), and unflatten() rebuilds the named full tensors (consolidation).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "plm/ckpt/safetensors.h"
#include "plm/dist/flat_layout.h"

namespace plm::ckpt {

/// "model.shard-00001-of-00003.safetensors" for kind "model", rank 1, world size 3.
std::string shard_file_name(const std::string& kind, int rank, int world_size);

std::string layout_to_json(const dist::ShardLayout& layout);
/// Throws CheckpointError naming `origin` when the JSON is not a layout.
dist::ShardLayout layout_from_json(const std::string& json, const std::string& origin);

/// The layout of the sharded checkpoint in `dir` (its shards.json); throws CheckpointError when absent or corrupt.
dist::ShardLayout read_layout(const std::string& dir);

/// Whether `dir` holds a sharded checkpoint (a shards.json).
bool is_sharded_checkpoint(const std::string& dir);

/// Reads the sharded checkpoint in `dir` (any world size); shard files are memory-mapped once per reader.
class ShardedCheckpointReader {
 public:
  /// Throws CheckpointError when `dir` has no valid shards.json.
  explicit ShardedCheckpointReader(std::string dir);

  const dist::ShardLayout& layout() const { return layout_; }
  /// The unit called `name`, or nullptr.
  const dist::UnitLayout* unit(const std::string& name) const;

  /// Elements [begin, begin + length) of the flat buffer `key` ("<unit>", or "<unit>.exp_avg", ...) of `unit` in
  /// the `kind` files ("model", "optimizer", "extra"), as an fp32 CPU tensor; elements at or beyond unit.numel are
  /// zero. Returns an undefined tensor when no shard holds `key` (optional entries such as partly accumulated
  /// gradients). Throws CheckpointError naming the file when a shard file is missing or holds a tensor of the wrong
  /// length.
  at::Tensor read_flat_range(const std::string& kind, const dist::UnitLayout& unit, const std::string& key,
                             int64_t begin, int64_t length);

  /// The tensor `key` of rank `rank`'s `kind` file, or nullptr (for per-rank entries).
  const at::Tensor* find(const std::string& kind, int rank, const std::string& key);

 private:
  const TensorMap& file(const std::string& kind, int rank);
  std::string dir_;
  dist::ShardLayout layout_;
  std::map<std::string, TensorMap> files_;
};

/// Every parameter of the sharded checkpoint `dir` as a full fp32 tensor, by name, in layout order.
TensorMap unflatten(const std::string& dir);

}  // namespace plm::ckpt
