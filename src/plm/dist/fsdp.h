// Fully sharded data parallel (docs/ARCHITECTURE.md "Distributed" and its sharding pitfalls; PLM trains with FSDP2
// full_shard, docs/reference.md 5.4). Each unit of the model (model/units.h) keeps its parameters as one flat fp32
// buffer padded to a multiple of the world size, of which this rank holds only its shard (dist/flat_layout.h has the
// layout). The model's own parameter tensors stay empty except while their unit runs:
//   forward:  all-gather the unit's shards in the compute dtype, run the unit without recording autograd, keep only
//             its input, free the gathered parameters;
//   backward: all-gather again, run the unit again with autograd, back-propagate through it, reduce-scatter (sum)
//             the unit's fp32 gradient into the shard's .grad, free.
// This is full activation checkpointing and sharding in one autograd function per unit use; the optimizer updates
// the shards (only their AdamW state exists on this rank). Frozen units are gathered but never reduced. A unit that
// mixes frozen and trainable parameters (LoRA: a block's base weights and their adapters, docs/lora.md) is two flat
// buffers, "<unit>" and "<unit>.trainable", gathered together; only the trainable one is reduced, and a LoRA run holds
// its frozen buffers' shards in the compute dtype (they are never updated: no fp32 copy, as MasterWeights does).
//
// Collective order: every rank must run the same units in the same order (docs/ARCHITECTURE.md, sharding pitfall 9), so
// every rank runs the vision tower on every micro-batch (the trainer gives text-only batches a dummy tile) and every
// micro-batch backward, even one without loss tokens.
// With one rank the gathers are copies (or, in fp32, views of the shard itself) and nothing is reduced. With several,
// communication overlaps computation: each unit use prefetches the next unit's gather (in the order recorded during
// the first micro-batch, for forward and for backward) and each reduce-scatter runs during the next unit's backward.
// Collectives run on the backend's own threads (Gloo) or stream (NCCL, which orders them after the compute stream's
// work at launch and makes the compute stream wait for them at wait()).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "plm/dist/flat_layout.h"
#include "plm/dist/process_group.h"
#include "plm/model/perception_lm.h"

namespace plm::dist {

/// The layout name of a unit's trainable flat buffer when the unit also has frozen parameters: "<unit>.trainable".
inline constexpr const char* kTrainableSuffix = ".trainable";

/// A model's parameters fully sharded over the ranks of a World (above): owns this rank's flat fp32 shard of every
/// unit and the unit runner installed in the model, which gathers, runs, frees and reduces each unit as it is used.
/// The model keeps its module structure; its parameter tensors are empty except while their unit runs.
class ShardedModel {
 public:
  /// Shards `model`, whose fp32 parameters must be identical on every rank (same seed or the same checkpoint) and
  /// whose requires_grad flags are set (apply_freezing): keeps this rank's slice of every flat buffer as a leaf on
  /// the parameters' device (fp32, or the compute dtype for a LoRA model's frozen ones; requiring grad when it
  /// trains), empties the model's parameters and installs the unit runner. `compute` is the dtype units run in (bf16 or
  /// fp32). `world` must outlive this object.
  ShardedModel(model::PerceptionLMImpl& model, World& world, at::ScalarType compute);
  /// Uninstalls the runner (the model's parameters stay empty).
  ~ShardedModel();
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  /// The flat buffers' layout (world size, names, parameters), identical on every rank.
  const ShardLayout& layout() const;

  /// (layout name, this rank's shard) for every flat buffer, in layout order. A shard's .grad holds the summed
  /// gradient of the ranks' losses.
  const std::vector<std::pair<std::string, at::Tensor>>& shards() const;
  /// Completes the gradient reductions still in flight after a backward (several ranks overlap each unit's
  /// reduce-scatter with the next unit's backward): call after every backward, before reading shard gradients.
  void finish_gradients();

  /// The fp32 shards of the flat buffers that train (what the optimizer updates).
  std::vector<std::pair<std::string, at::Tensor>> trainable_shards() const;

  /// Per trainable shard (in trainable_shards() order): 1 where the element belongs to a parameter of two or more
  /// dimensions, 0 for 1-D ones (norms, biases, LayerScale) and padding: the weight-decay mask for
  /// optim.decay_norms_and_biases = false.
  std::vector<at::Tensor> matrix_masks() const;

  /// Every parameter as a full fp32 tensor by name, gathered from all ranks (a collective: call on every rank).
  std::vector<std::pair<std::string, at::Tensor>> full_parameters() const;

  /// Bytes of this rank's shards, their gradients (when present) and padding elements, for the memory report.
  struct Footprint {
    int64_t shard_bytes = 0, grad_bytes = 0, padding_elements = 0;
  };
  Footprint footprint() const;

  struct Impl;  // the unit runner (fsdp.cpp)

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace plm::dist
