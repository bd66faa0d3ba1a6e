// Replicated data parallelism (distributed.fsdp_type no_shard, as DDP; also every single-process run): every rank
// holds the whole model, its fp32 masters (train/precision.h), their gradients and the AdamW state; after the step's
// last backward the fp32 gradients are summed over ranks in one flat all-reduce, so every rank applies the same
// update. Rank 0 writes checkpoints in the single-process layout; sharded checkpoints load too (ckpt::as_plain).
#pragma once

#include "plm/train/data_parallel.h"
#include "plm/train/precision.h"

namespace plm::train {

class Replicated : public DataParallel {
 public:
  /// `model`'s fp32 parameters become the masters (train/precision.h); `world` must outlive this object.
  Replicated(model::PerceptionLMImpl& model, dist::World& world, at::ScalarType compute);

  const NamedTensors& trainable() const override { return masters_.trainable(); }
  std::unique_ptr<AdamW> make_optimizer(const config::OptimArgs& optim) const override;
  NamedTensors full_parameters() const override { return masters_.all(); }
  void prepare(model::ModelInputs&) const override {}
  void after_backward() override { masters_.accumulate_gradients(); }
  void reduce_gradients() override;
  double clip_gradients(double max_norm) override;
  void publish() override { masters_.publish(); }
  std::string save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                   ckpt::TensorMap extra, const CheckpointTexts& texts) override;
  Restored restore(const std::string& dir) override;
  Footprint footprint() const override;

 private:
  MasterWeights masters_;
  dist::World& world_;
};

}  // namespace plm::train
