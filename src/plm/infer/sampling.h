// Choosing the next token from logits, as PLM's sample_tokens (docs/reference.md 8 "Sampling").
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace plm::infer {

/// temperature 0 is greedy (argmax); otherwise probabilities are softmax(logits / temperature) and, like PLM,
/// top_p is used when set, else top_k when set, else the full distribution.
struct SamplingOptions {
  double temperature = 0.0;
  std::optional<double> top_p;   // keep the smallest prefix of the sorted distribution whose mass reaches p
  std::optional<int64_t> top_k;  // keep the k most probable tokens (ties with the k-th kept)

  /// Throws GenerateError ("bad_option") naming the option for temperature < 0, top_p outside (0, 1] or
  /// top_k < 1.
  void check() const;
};

/// One token per row: logits [B, V] (any float dtype, any device) -> int64 [B] on the CPU. Sampling runs in fp32
/// on the CPU, drawing from `generator` (a CPU generator) in row order, so a seed reproduces the tokens on any
/// device. top-p: sort descending, zero every token whose exclusive cumulative mass exceeds p (the first is always
/// kept), draw from the rest (multinomial renormalises). top-k: zero tokens below the k-th largest probability,
/// renormalise, draw.
at::Tensor sample_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

}  // namespace plm::infer
