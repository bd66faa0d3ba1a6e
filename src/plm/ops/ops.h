// The numerical building blocks of the model. Every numeric primitive the model computes goes through these calls;
// each is a plain ATen function here (autograd through ATen, or an explicit backward where noted), and that ATen path
// is the reference: a fused CUDA version lives behind the same call and is tested against it (tests/unit/ops_test.cpp,
// docs/ARCHITECTURE.md "Model").
//
// "In fp32" below means in at least fp32: bf16/fp16 inputs are computed in fp32, fp32 and double in their own type.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace plm::ops {

/// Scaled dot-product attention through at::scaled_dot_product_attention.
/// q [B, H, S, D]; k, v [B, Hkv, Skv, D] with H a multiple of Hkv: query head h reads kv head h / (H / Hkv)
/// (consecutive groups, as PLM's repeat_kv). `causal`: position i attends to j <= i (S == Skv). scale: 1/sqrt(D) if
/// unset. Returns [B, H, S, D] in q's dtype.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                     std::optional<double> scale = std::nullopt);

/// attention() with an explicit boolean mask broadcastable to [B, H, S, Skv]: query i reads key j where mask is true
/// (cached decoding's per-row positions). Every query must read at least one key.
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::optional<double> scale = std::nullopt);

/// Causal attention within the sequences packed into each row (data/packing.h): row b of q [B, H, S, D] and of
/// k, v [B, Hkv, S, D] holds sequences of lengths[b][0], lengths[b][1], ... tokens one after another, and the rest of
/// the row (padding) as one more sequence; a query reads the keys of its own sequence up to itself, never across a
/// boundary. Each sequence gets attention()'s causal result on its own tokens. CUDA bf16/fp16 (head size a multiple
/// of 8, at most 256): one variable-length flash-attention call over all rows' sequences by their cumulative
/// offsets, with no mask; elsewhere attention() on each sequence's slice (on the CPU that beats one SDPA call with
/// a block-diagonal mask: bench/packed_attention_bench.sh). Logs the path once per device, dtype and head size.
at::Tensor packed_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::vector<std::vector<int64_t>>& lengths,
                            std::optional<double> scale = std::nullopt);

/// The kernel at::scaled_dot_product_attention picks for these inputs, as ATen's own dispatch decides it
/// (at::_fused_sdp_choice): "flash", "efficient", "cudnn", "math" or "overrideable". attention() and
/// masked_attention() log it at INFO once per device, dtype, head size and kind (causal, full, masked), so a run
/// shows whether its attention got a fused kernel or fell back to the math path, whose memory grows as S x Skv.
std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& mask, bool causal,
                              std::optional<double> scale = std::nullopt);

/// RMSNorm as PLM computes it: x in fp32, x * rsqrt(mean(x^2) + eps), times weight in fp32, cast back to x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

/// LayerNorm over the last dimension, (x - mean) / sqrt(var + eps) * weight + bias with the biased variance (the
/// Perception Encoder's nn.LayerNorm; at::layer_norm, which accumulates in fp32). Returns x's dtype.
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps = 1e-5);

/// The decoder's SiLU-gated unit: silu(gate) * up, gate = w1 x and up = w3 x (Llama's FeedForward), in their dtype.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

/// Rotates adjacent pairs (x[2j], x[2j+1]) of the last dimension by angle a_j, in fp32, cast back to x's dtype:
/// out[2j] = x[2j] cos a_j - x[2j+1] sin a_j, out[2j+1] = x[2j+1] cos a_j + x[2j] sin a_j.
/// cos and sin hold one value per pair ([..., D/2], fp32) and broadcast against x's leading dimensions.
/// Used by both the decoder RoPE (docs/reference.md 1.5) and the Perception Encoder's 2D RoPE (docs/reference.md 1.2).
at::Tensor rotate_pairs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

/// Mean cross-entropy in fp32 over the rows of `logits` [N, V] against `targets` [N] (log_softmax then NLL, as
/// PLM's cross_entropy). N = 0 gives NaN, as the reference does.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets);

/// cross_entropy(at::linear(h, weight), targets) without ever holding the [N, V] logits: h [N, D] (the loss
/// positions' final hidden states), weight [V, D] (the output layer), targets int64 [N] in [0, V). The tokens go in
/// chunks of `chunk_tokens` (0: as many as keep one chunk's fp32 logits within kLogitsPerChunk values); forward keeps
/// only each token's log-sum-exp, backward recomputes each chunk's logits and turns them into that chunk's gradients
/// at once. Same loss and gradients as the plain path within fp32 rounding (the weight gradient is summed over chunks
/// in fp32); memory for the loss head is O(chunk x V) instead of O(N x V). N = 0 gives NaN, as cross_entropy.
at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_tokens = 0);

/// The fp32 logits one chunk of linear_cross_entropy may hold: 2^24 values, 64 MiB, 130 tokens of a 128,256-id head.
/// Measured on the CPU (bench/loss_head_bench.sh 4096 256, 4,096 loss tokens, hidden 256, forward + backward): peak
/// 193 MiB against the plain path's 6,012 MiB at 14.6 s against 13.6 s; 1,024-token chunks took 9.9 s at 1,002 MiB.
inline constexpr int64_t kLogitsPerChunk = int64_t{1} << 24;

}  // namespace plm::ops
