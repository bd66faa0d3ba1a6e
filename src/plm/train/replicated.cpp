#include "plm/train/replicated.h"

#include "plm/ckpt/lora_base.h"
#include "plm/ckpt/sharded.h"
#include "plm/ckpt/sharded_checkpoint.h"

namespace plm::train {

Replicated::Replicated(model::PerceptionLMImpl& model, dist::World& world, at::ScalarType compute)
    : masters_(model, compute), world_(world) {}

std::unique_ptr<AdamW> Replicated::make_optimizer(const config::OptimArgs& optim) const {
  return std::make_unique<AdamW>(masters_.trainable(), optim, optim.decay_norms_and_biases);
}

void Replicated::reduce_gradients() {
  if (world_.size() == 1) return;
  // One flat buffer: one collective per step. A gradient autograd never produced counts as zeros.
  const NamedTensors& params = masters_.trainable();
  std::vector<at::Tensor> flat;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) const_cast<at::Tensor&>(p).mutable_grad() = at::zeros_like(p);
    flat.push_back(p.grad().reshape({-1}));
  }
  if (flat.empty()) return;
  const at::Tensor buffer = at::cat(flat);
  world_.all_reduce(buffer, dist::ReduceOp::sum);
  int64_t offset = 0;
  for (const auto& [name, p] : params) {
    const int64_t n = p.numel();
    p.grad().copy_(buffer.narrow(0, offset, n).view(p.sizes()));
    offset += n;
  }
}

double Replicated::clip_gradients(double max_norm) {
  return clip_grad_norm(masters_.trainable(), max_norm);  // the gradients are the same on every rank
}

std::string Replicated::save(const ckpt::CheckpointStore& store, int64_t step, const NamedTensors& optimizer_state,
                             ckpt::TensorMap extra, const CheckpointTexts& texts) {
  if (world_.rank() != 0) return store.step_dir(step);  // the ranks hold the same weights and optimizer state
  ckpt::CheckpointContents c;
  const bool adapters_only = !texts.lora_base_json.empty();  // the base is checkpoint.init_ckpt_path's, unchanged
  for (const auto& [name, t] : masters_.all())
    if (!adapters_only || model::is_lora_parameter(name)) c.model.insert(name, t.detach());
  if (adapters_only) c.texts[ckpt::kLoraBaseFile] = texts.lora_base_json;
  for (const auto& [name, t] : optimizer_state) c.optimizer.insert(name, t);
  c.extra = std::move(extra);
  c.params_json = texts.params_json;
  c.train_state_json = texts.train_state_json;
  return store.save(step, c);
}

Restored Replicated::restore(const std::string& dir) {
  const ckpt::CheckpointContents c =
      ckpt::is_sharded_checkpoint(dir) ? ckpt::as_plain(dir) : ckpt::CheckpointStore::load(dir);
  at::NoGradGuard no_grad;
  const auto lora = c.texts.find(ckpt::kLoraBaseFile);
  for (const auto& [name, master] : masters_.all()) {
    if (lora != c.texts.end() && !model::is_lora_parameter(name)) continue;  // the base: loaded at set-up
    const at::Tensor* t = c.model.find(name);
    if (!t || !t->sizes().equals(master.sizes()))
      throw ckpt::CheckpointError("checkpoint '" + dir + "' " + (t ? "has another shape for '" : "has no tensor '") +
                                  name + "': it was written by a run with another model configuration.");
    const_cast<at::Tensor&>(master).copy_(*t);
  }
  return {NamedTensors(c.optimizer.begin(), c.optimizer.end()), c.extra, c.train_state_json,
          lora == c.texts.end() ? std::string() : lora->second};
}

Footprint Replicated::footprint() const {
  Footprint f;
  for (const auto& [name, t] : masters_.all()) f.parameter_bytes += static_cast<int64_t>(t.nbytes());
  for (const auto& [name, t] : masters_.trainable())
    if (t.grad().defined()) f.gradient_bytes += static_cast<int64_t>(t.grad().nbytes());
  return f;
}

}  // namespace plm::train
