// AdamW as PLM configures it (docs/reference.md 5.3): torch.optim.AdamW with one parameter group, betas (beta1, beta2),
// eps, and decoupled weight decay p <- p (1 - lr wd) on every trainable parameter, norms, biases, LayerScale and
// embeddings included (optionally excluding norms and biases). It updates fp32 master weights with fp32 state; the
// trainer keeps any bf16 compute copies.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "plm/common/named_tensors.h"
#include "plm/config/args.h"

namespace plm::train {

/// torch.optim.AdamW over named fp32 tensors (the strategy's trainable(), train/data_parallel.h): owns the first
/// and second moments and step count of each, updates the tensors in place from their .grad.
class AdamW {
 public:
  /// `params`: (name, fp32 parameter) pairs; those without a gradient at step() are left alone.
  /// `decay_norms_and_biases` false exempts 1-D parameters (norm weights, biases, LayerScale gammas) from decay.
  AdamW(NamedTensors params, const config::OptimArgs& optim, bool decay_norms_and_biases = true);

  /// One update at learning rate `lr` of every parameter that has a gradient: step += 1, p *= 1 - lr wd,
  /// m = lerp(m, g, 1 - beta1), v = beta2 v + (1 - beta2) g^2, p -= lr / (1 - beta1^step) m / (sqrt(v) /
  /// sqrt(1 - beta2^step) + eps), in torch.optim.AdamW's order of operations (the moments and the last line in
  /// one fused kernel: torch's fused=True path, equal to the single-tensor path within fp32 rounding).
  /// Parameters must be contiguous.
  void step(double lr);

  /// Per parameter (in params() order), a 0/1 tensor of its shape saying which elements weight decay applies to
  /// (the sharded trainer's flat shards mix matrices with norms and biases); replaces the per-parameter rule.
  void set_decay_masks(std::vector<at::Tensor> masks);

  /// Drops every gradient (sets it undefined).
  void zero_grad();

  /// The optimizer state for checkpoints: "<name>.exp_avg", "<name>.exp_avg_sq" (fp32) and "<name>.step"
  /// (a 0-d fp32 tensor, as PyTorch stores it), for every parameter updated at least once.
  NamedTensors state() const;

  /// Restores state(); throws std::invalid_argument naming a tensor whose shape does not match.
  void load_state(const NamedTensors& state);

  const NamedTensors& params() const { return params_; }

 private:
  struct Slot {
    int64_t step = 0;
    at::Tensor exp_avg, exp_avg_sq;
    bool decay = true;
    at::Tensor decay_mask;   // set_decay_masks()
    at::Tensor step_tensor;  // `step` as the fused kernel reads it (0-d fp32 on the parameter's device)
  };
  NamedTensors params_;
  std::vector<Slot> slots_;
  config::OptimArgs optim_;
};

/// torch.nn.utils.clip_grad_norm_: the global L2 norm of all gradients (fp32, norm of the per-tensor norms); every
/// gradient is multiplied by min(1, max_norm / (norm + 1e-6)) when max_norm > 0. Returns the norm before clipping.
/// For gradients sharded over ranks, `sum_over_ranks` adds this rank's squared norm to the other ranks' (a collective).
double clip_grad_norm(const NamedTensors& params, double max_norm,
                      const std::function<double(double)>& sum_over_ranks = {});

}  // namespace plm::train
