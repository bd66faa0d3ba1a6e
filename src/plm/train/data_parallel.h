// How the ranks of a run share the model's parameters, gradients and optimizer state: the one seam between the
// training loop and data parallelism. The trainer holds one DataParallel and never asks which it is; each
// implementation owns everything its strategy implies: which fp32 tensors the optimizer updates, how gradients cross
// ranks, what a checkpoint holds, and what every rank must run so that collectives stay in step.
//   replicated (train/replicated.h; distributed.fsdp_type no_shard, and any single process): every rank holds
//     every fp32 master; gradients are summed over ranks in one flat all-reduce after the step's last backward;
//   fully sharded (train/fully_sharded.h; full_shard): dist::ShardedModel, each rank holds 1/N of every unit's
//     parameters, gradients and optimizer state; gradients are reduce-scattered unit by unit during backward.
// A new strategy (HSDP, say) is a new implementation built by make_data_parallel(); docs/ARCHITECTURE.md sketches
// one.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "plm/ckpt/checkpoint_store.h"
#include "plm/common/named_tensors.h"
#include "plm/config/args.h"
#include "plm/dist/process_group.h"
#include "plm/model/perception_lm.h"
#include "plm/train/adamw.h"

namespace plm::train {

/// What a rank holds, for the memory report.
struct Footprint {
  int64_t parameter_bytes = 0;   // fp32 parameters (masters or shards)
  int64_t gradient_bytes = 0;    // their gradients, where present
  int64_t padding_elements = 0;  // elements that pad flat shards to equal lengths
};

/// The text files of a checkpoint.
struct CheckpointTexts {
  std::string params_json;       // the whole resolved config
  std::string train_state_json;  // train/train_state.h
  std::string lora_base_json;    // a LoRA run over a base checkpoint (ckpt/lora_base.h): save the adapters only
};

/// What a restore read besides the weights, which it wrote into the parameters.
struct Restored {
  NamedTensors optimizer_state;  // for AdamW::load_state
  ckpt::TensorMap extra;         // partly accumulated gradients "grad.<trainable name>"
  std::string train_state_json;
  std::string lora_base_json;  // the checkpoint's lora_base.json ("" when it holds the whole model)
};

class DataParallel {
 public:
  virtual ~DataParallel() = default;

  /// The fp32 tensors the optimizer updates, by name (parameter names when replicated, unit names when sharded).
  /// After the step's backward passes and reduce_gradients(), each .grad holds the step's gradient: the sum over
  /// ranks of the gradients of each rank's scaled losses.
  virtual const NamedTensors& trainable() const = 0;

  /// AdamW over trainable(), with weight decay exempting 1-D parameters (norms, biases, LayerScale) when
  /// optim.decay_norms_and_biases is false.
  virtual std::unique_ptr<AdamW> make_optimizer(const config::OptimArgs& optim) const = 0;

  /// Every parameter's full fp32 value by name (a collective where they are sharded: call on every rank).
  virtual NamedTensors full_parameters() const = 0;

  /// Completes a micro-batch's inputs before it runs on this rank. Where every rank must run every unit on every
  /// micro-batch, a batch without media gets a dummy tile, dropped after the vision tower.
  virtual void prepare(model::ModelInputs& in) const = 0;

  /// After each micro-batch's backward: its gradients are added into trainable()'s (in fp32).
  virtual void after_backward() = 0;

  /// After the step's last backward: gradients that are not summed over ranks yet are.
  virtual void reduce_gradients() = 0;

  /// torch.nn.utils.clip_grad_norm_ over every rank's gradients: returns the global L2 norm before clipping, and
  /// scales the gradients to `max_norm` when max_norm > 0 and the norm exceeds it. A collective.
  virtual double clip_gradients(double max_norm) = 0;

  /// After an optimizer step or a restore: the model computes with the updated fp32 values from now on.
  virtual void publish() = 0;

  /// Saves the checkpoint of `step` into `store`: the weights, `optimizer_state` (this rank's AdamW state), `extra`
  /// (this rank's partly accumulated gradients) and `texts`. Every rank calls it; which ranks write
  /// is the strategy's business. Returns the step folder. Throws ckpt::CheckpointError on I/O errors.
  virtual std::string save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                           ckpt::TensorMap extra, const CheckpointTexts& texts) = 0;

  /// Loads the weights of the checkpoint `dir` (either layout, saved at any world size) into the parameters and
  /// returns the rest, resharded where needed. Throws ckpt::CheckpointError naming the folder when it was written
  /// for another model configuration.
  virtual Restored restore(const std::string& dir) = 0;

  virtual Footprint footprint() const = 0;
};

/// The strategy `distributed.fsdp_type` names (full_shard: FullySharded, no_shard: Replicated) for `model`, whose fp32
/// parameters must be identical on every rank of `world` and whose freezing is applied. `compute` is the dtype the
/// model computes in (bf16 or fp32). `model` and `world` must outlive the result.
std::unique_ptr<DataParallel> make_data_parallel(config::FsdpType fsdp_type, model::PerceptionLMImpl& model,
                                                 dist::World& world, at::ScalarType compute);

}  // namespace plm::train
