#include "plm/train/fully_sharded.h"

#include "plm/ckpt/lora_base.h"
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

FullySharded::Saved FullySharded::saved(bool adapters_only) const {
  Saved out;
  out.layout.world_size = sharded_.layout().world_size;
  for (size_t i = 0; i < sharded_.shards().size(); ++i) {
    const dist::UnitLayout& unit = sharded_.layout().units[i];
    if (adapters_only && !unit.trainable) continue;  // the base: checkpoint.init_ckpt_path's, unchanged
    out.layout.units.push_back(unit);
    out.shards.push_back(sharded_.shards()[i]);
  }
  return out;
}

std::string FullySharded::save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                               ckpt::TensorMap extra, const CheckpointTexts& texts) {
  const bool adapters_only = !texts.lora_base_json.empty();
  const Saved part = saved(adapters_only);
  std::vector<std::pair<std::string, std::string>> files = {{"params.json", texts.params_json},
                                                            {"train_state.json", texts.train_state_json}};
  if (adapters_only) files.emplace_back(ckpt::kLoraBaseFile, texts.lora_base_json);
  return store.save_sharded(step,
                            ckpt::sharded_checkpoint_files(part.layout, part.shards, optimizer_state, std::move(extra),
                                                           world_.rank(), std::move(files)),
                            world_);
}

Restored FullySharded::restore(const std::string& dir) {
  const ckpt::CheckpointContents texts = ckpt::CheckpointStore::load(dir);
  const auto lora = texts.texts.find(ckpt::kLoraBaseFile);
  const Saved part = saved(lora != texts.texts.end());
  ckpt::ShardedRestore r = ckpt::restore_sharded(dir, part.layout, part.shards, world_.rank());
  return {std::move(r.optimizer_state), std::move(r.extra), texts.train_state_json,
          lora == texts.texts.end() ? std::string() : lora->second};
}

Footprint FullySharded::footprint() const {
  const dist::ShardedModel::Footprint f = sharded_.footprint();
  return {f.shard_bytes, f.grad_bytes, f.padding_elements};
}

}  // namespace plm::train
