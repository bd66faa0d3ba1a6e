#include "plm/train/precision.h"

namespace plm::train {

MasterWeights::MasterWeights(model::PerceptionLMImpl& model, at::ScalarType compute) : compute_(compute) {
  at::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    at::Tensor param = p.value();
    TORCH_CHECK(param.scalar_type() == at::kFloat, "mixed precision starts from fp32 parameters; '", p.key(), "' is ",
                param.scalar_type());
    at::Tensor master = param;
    if (compute_ != at::kFloat) {
      // LoRA's frozen base is never updated: it is held in the compute dtype only, without an fp32 copy.
      const bool frozen_base = model.args.lora && !param.requires_grad();
      if (!frozen_base) master = param.detach().clone();
      param.set_data(param.to(compute_));
    }
    if (param.requires_grad()) {
      trainable_index_.push_back(masters_.size());
      trainable_.emplace_back(p.key(), master);
    }
    masters_.emplace_back(p.key(), master);
    model_params_.push_back(param);
  }
}

void MasterWeights::accumulate_gradients() {
  at::NoGradGuard no_grad;
  if (compute_ == at::kFloat) {
    // Autograd may hand a parameter a gradient that is a view of a buffer another parameter's gradient also views
    // (a size-1 expand's backward: the vision CLS embedding and position-embedding row 0 at one image per
    // micro-batch). The next micro-batch accumulates in place into both, counting each other's share twice.
    // Give such gradients their own storage.
    for (const size_t i : trainable_index_) {
      at::Tensor& g = model_params_[i].mutable_grad();
      if (g.defined() && (g.is_view() || g.storage().use_count() > 1)) g = g.clone();
    }
    return;
  }
  for (const size_t i : trainable_index_) {
    at::Tensor& g = model_params_[i].mutable_grad();
    if (!g.defined()) continue;
    at::Tensor& master_grad = masters_[i].second.mutable_grad();
    if (master_grad.defined())
      master_grad.add_(g.to(at::kFloat));
    else
      master_grad = g.to(at::kFloat);
    g = at::Tensor();
  }
}

void MasterWeights::publish() {
  if (compute_ == at::kFloat) return;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < masters_.size(); ++i)
    if (!masters_[i].second.is_same(model_params_[i])) model_params_[i].copy_(masters_[i].second);
}

}  // namespace plm::train
