// Initialisation, as PLM does it (docs/reference.md 1.2, 1.4, 1.5). In PLM every weight normally comes from a
// checkpoint; these matter for the projector at stage 1, LayerScale at stage 2, and training from scratch (tests, the
// demo).
#pragma once

#include <ATen/ATen.h>

#include "plm/model/perception_lm.h"

namespace plm::model {

/// torch.nn.init.trunc_normal_: normal(mean, std) truncated to [a, b] by inverse-CDF sampling from `gen`.
void trunc_normal_(at::Tensor& t, double mean, double std, double a, double b, const at::Generator& gen);

/// The decoder (embeddings, blocks, norms, untied output) from a generator seeded with model.seed, independent of
/// the global RNG (PLM's fork_rng): truncated normals with std dim^-0.5 (the blocks: init_base_std when set), wo and
/// w2 divided by the init_std_factor's depth factor, w2 with hidden^-0.5; RMSNorm weights 1. Order: norm,
/// tok_embeddings, output, then per layer wq wk wv wo, w1 w3 w2.
void init_decoder(PerceptionLMImpl& model);

/// The projector from the global RNG (PLM seeds it with the run's seed): weights and biases alike drawn from a
/// truncated normal (use_gaussian) or uniform with std coeff_std / sqrt(dim); nothing when no_init.
void init_projector(PerceptionLMImpl& model);

/// The vision tower as PE's init_tensors: in_proj xavier-uniform with zero biases, out_proj bias 0, LayerScale gamma =
/// ls_init_value, CLS and position embedding width^-0.5 * N(0, 1), conv/LayerNorm/MLP PyTorch's defaults.
void init_vision(PerceptionLMImpl& model);

/// LoRA adapters (model/lora.h) as PEFT's default init: A Kaiming-uniform with a = sqrt(5) (U(+-1/sqrt(in))), B zero,
/// so that a fresh adapter changes nothing; drawn from a generator seeded with model.seed + 1, in parameter order.
void init_lora(PerceptionLMImpl& model);

/// All four: what a model trained from scratch starts from.
void init_all(PerceptionLMImpl& model);

}  // namespace plm::model
