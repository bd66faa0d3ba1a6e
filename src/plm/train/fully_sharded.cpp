#include "plm/train/fully_sharded.h"

#include "plm/ckpt/sharded_checkpoint.h"

namespace plm::train {

FullySharded::FullySharded(model::PerceptionLMImpl& model, dist::World& world, at::ScalarType compute)
    : model_(model), world_(world), sharded_(model, world, compute), trainable_(sharded_.trainable_shards()) {}

std::unique_ptr<AdamW> FullySharded::make_optimizer(const config::OptimArgs& optim) const {
  auto adamw = std::make_unique<AdamW>(trainable_, optim);
  // A flat shard mixes matrices with norms and biases: the exemption is per element.
  if (!optim.decay_norms_and_biases) adamw->set_decay_masks(sharded_.matrix_masks());
  return adamw;
}

void FullySharded::prepare(model::ModelInputs& in) const {
  if (!model_.vision_model || in.images.defined()) return;
  const int64_t r = model_.args.vision_model->image_size;
  const at::Device device = in.tokens.device();
  in.images = at::zeros({1, 3, r, r}, at::TensorOptions().device(device));
  in.image_mask = at::zeros(in.tokens.sizes(), at::kBool);  // on the host, as model_inputs' masks
  in.chunk_has_text = at::ones({1}, at::kBool);
  in.drop_path_keys = {0};  // dropped after the tower: any key, but one (no draw from a generator)
}

double FullySharded::clip_gradients(double max_norm) {
  if (world_.size() == 1) return clip_grad_norm(trainable_, max_norm);
  return clip_grad_norm(trainable_, max_norm, [this](double local) {  // each rank holds a part of the gradient
    const at::Tensor t = at::tensor({local}, at::kDouble);
    world_.all_reduce(t, dist::ReduceOp::sum);
    return t.item<double>();
  });
}

std::string FullySharded::save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                               ckpt::TensorMap extra, const CheckpointTexts& texts) {
  return store.save_sharded(step,
                            ckpt::sharded_checkpoint_files(
                                sharded_.layout(), sharded_.shards(), optimizer_state, std::move(extra), world_.rank(),
                                {{"params.json", texts.params_json}, {"train_state.json", texts.train_state_json}}),
                            world_);
}

Restored FullySharded::restore(const std::string& dir) {
  ckpt::ShardedRestore r = ckpt::restore_sharded(dir, sharded_.layout(), sharded_.shards(), world_.rank());
  return {std::move(r.optimizer_state), std::move(r.extra), ckpt::CheckpointStore::load(dir).train_state_json};
}

Footprint FullySharded::footprint() const {
  const dist::ShardedModel::Footprint f = sharded_.footprint();
  return {f.shard_bytes, f.grad_bytes, f.padding_elements};
}

}  // namespace plm::train
