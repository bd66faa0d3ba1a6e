// The numerical building blocks of the model, each a plain ATen function (autograd through ATen).
// Fused CUDA versions, when added, live behind these same calls and are tested against them.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace plm::ops {

/// Scaled dot-product attention through at::scaled_dot_product_attention.
/// q [B, H, S, D]; k, v [B, Hkv, S, D] with H a multiple of Hkv: query head h reads kv head h / (H / Hkv)
/// (consecutive groups, as PLM's repeat_kv). `causal`: position i attends to j <= i. scale: 1/sqrt(D) if unset.
/// Returns [B, H, S, D] in q's dtype.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                     std::optional<double> scale = std::nullopt);

/// RMSNorm as PLM computes it: x in fp32, x * rsqrt(mean(x^2) + eps), times weight in fp32, cast back to x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

/// Rotates adjacent pairs (x[2j], x[2j+1]) of the last dimension by angle a_j, in fp32, cast back to x's dtype:
/// out[2j] = x[2j] cos a_j - x[2j+1] sin a_j, out[2j+1] = x[2j+1] cos a_j + x[2j] sin a_j.
/// cos and sin hold one value per pair ([..., D/2], fp32) and broadcast against x's leading dimensions.
/// Used by both the decoder RoPE (docs/reference.md 1.5) and the Perception Encoder's 2D RoPE (docs/reference.md 1.2).
at::Tensor rotate_pairs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

/// Mean cross-entropy in fp32 over the rows of `logits` [N, V] against `targets` [N] (log_softmax then NLL, as
/// PLM's cross_entropy). N = 0 gives NaN, as the reference does.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace plm::ops
