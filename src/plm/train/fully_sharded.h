// Fully sharded data parallelism (distributed.fsdp_type full_shard, PLM's recipes): dist::ShardedModel holds this
// rank's 1/N of every unit's fp32 parameters; gradients are reduce-scattered unit by unit during backward, the
// optimizer updates the shards, and every rank writes its shards into one checkpoint folder (ckpt/sharded.h) that any
// world size resumes from. Every rank must run every unit on every micro-batch (the units' collectives must stay in
// step), so prepare() gives a batch without media a dummy tile. A LoRA run's checkpoints hold only the trainable
// (adapter) buffers and lora_base.json, as the replicated ones do.
#pragma once

#include "plm/dist/fsdp.h"
#include "plm/train/data_parallel.h"

namespace plm::train {

class FullySharded : public DataParallel {
 public:
  /// Shards `model` over `world` (dist::ShardedModel); both must outlive this object.
  FullySharded(model::PerceptionLMImpl& model, dist::World& world, at::ScalarType compute);

  const NamedTensors& trainable() const override { return trainable_; }
  std::unique_ptr<AdamW> make_optimizer(const config::OptimArgs& optim) const override;
  NamedTensors full_parameters() const override { return sharded_.full_parameters(); }
  void prepare(model::ModelInputs& in) const override;
  void after_backward() override { sharded_.finish_gradients(); }
  void reduce_gradients() override {}  // done during backward
  double clip_gradients(double max_norm) override;
  void publish() override {}  // the units gather from the shards at every use
  std::string save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                   ckpt::TensorMap extra, const CheckpointTexts& texts) override;
  Restored restore(const std::string& dir) override;
  Footprint footprint() const override;

 private:
  /// The buffers a checkpoint holds: all, or the trainable ones only (a LoRA run over a base checkpoint).
  struct Saved {
    dist::ShardLayout layout;
    NamedTensors shards;
  };
  Saved saved(bool adapters_only) const;

  const model::PerceptionLMImpl& model_;
  dist::World& world_;
  dist::ShardedModel sharded_;
  NamedTensors trainable_;
};

}  // namespace plm::train
