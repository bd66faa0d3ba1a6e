// The Llama 3 decoder block (docs/reference.md 1.5): pre-norm attention with GQA and interleaved-pair RoPE, SwiGLU FFN.
// Module and parameter names are Meta's original Llama names (attention.wq, feed_forward.w1, attention_norm, ...).
#pragma once

#include <memory>
#include <vector>

#include "plm/config/args.h"
#include "plm/model/layers.h"
#include "plm/model/rope.h"

namespace plm::model {

/// Sizes derived from ModelArgs as PLM derives them.
struct DecoderDims {
  int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab_size;
};

/// head_dim = head_dim or dim / n_heads; n_heads = n_heads or dim / head_dim; n_kv_heads = n_kv_heads or n_heads;
/// hidden = int(2 * 4 * dim / 3), times ffn_dim_multiplier (truncated), rounded up to multiple_of.
DecoderDims decoder_dims(const config::ModelArgs& args);

/// One decoder layer's share of a KV cache (infer/kv_cache.h owns it): keys after RoPE, and values, with the
/// un-repeated GQA heads (docs/reference.md 8), each [B, Hkv, capacity, hd] in the model's dtype. Slot j of row b holds
/// row b's token at position j: every row keeps its own positions 0, 1, 2, ... (right-padded batches).
struct KVCacheLayer {
  at::Tensor k, v;
};

/// The tokens of one cached forward step and what they see; built once per step and shared by every layer.
struct CachedStep {
  at::Tensor positions;  // int64 [B, S]: each token's position in its own sequence, which is also its cache slot
  at::Tensor cos, sin;   // fp32 [B or 1, S, 1, hd/2]: the RoPE table at `positions`
  at::Tensor mask;       // bool [B, 1, S, kv_len]: slot j is visible to token (b, s) iff j <= positions[b, s];
                         // undefined for a prefill: plain causal attention over the step's own S tokens
  int64_t kv_len = 0;    // cache slots read: max position + 1

  /// The first step of `batch` rows of `seqlen` tokens at positions 0..seqlen-1 (right-padded prompts: a row's
  /// padding comes after its tokens, so causal attention never lets a real token see it). `rope` must cover
  /// seqlen positions.
  static CachedStep prefill(const RopeTable& rope, int64_t batch, int64_t seqlen);

  /// A later step: tokens at arbitrary per-row `positions` (int64 [B, S], on the model's device) whose earlier
  /// positions are already in the cache. `rope` must cover max(positions) + 1 positions.
  static CachedStep at(const RopeTable& rope, const at::Tensor& positions);
};

/// The tokens of one uncached forward (training, validation, scoring) and what each reads: its RoPE angles and, in
/// packed rows (data/packing.h), the sequences that attention must not cross.
struct TokenLayout {
  at::Tensor cos, sin;  // fp32 [S, 1, hd/2] (every row at positions 0..S-1) or [B, S, 1, hd/2] (packed rows)
  std::shared_ptr<const std::vector<std::vector<int64_t>>> segments;  // packed rows' sequence lengths
                                                                      // (ops::packed_attention); null: one per row

  /// Rows of `seqlen` tokens at positions 0..seqlen-1, each one causal sequence. `rope` must cover seqlen positions.
  static TokenLayout rows(const RopeTable& rope, int64_t seqlen);
  /// Packed rows: token (b, s) at `positions` (int64 [B, S], on the model's device), the rows' sequences by
  /// `segments`. `rope` must cover max(positions) + 1 positions.
  static TokenLayout packed(const RopeTable& rope, const at::Tensor& positions,
                            std::vector<std::vector<int64_t>> segments);
};

/// `attention`: wq [H*hd, dim], wk/wv [Hkv*hd, dim], wo [dim, H*hd], no biases.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const DecoderDims& d, const at::TensorOptions& options);
  /// x [B, S, dim]; causal attention over each row, or within each packed sequence (`layout`).
  at::Tensor forward(const at::Tensor& x, const TokenLayout& layout) const;
  /// The cached path (generation): x [B, S, dim] are the tokens of `step`. Writes their keys (after RoPE) and
  /// values into `cache` at their positions, then attends over the row's slots 0..position. Same weights and ops
  /// as forward(); a prefill step gives forward()'s values and leaves K/V of slots 0..S-1 in the cache.
  at::Tensor forward_cached(const at::Tensor& x, const CachedStep& step, KVCacheLayer& cache) const;
  Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  int64_t n_heads, n_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

/// `feed_forward`: w2(silu(w1 x) * w3 x).
struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(const DecoderDims& d, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(FeedForward);

/// `layers.i`: h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)).
struct TransformerBlockImpl : torch::nn::Module {
  TransformerBlockImpl(const DecoderDims& d, double norm_eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const TokenLayout& layout) const;
  /// forward() with cached attention (AttentionImpl::forward_cached).
  at::Tensor forward_cached(const at::Tensor& x, const CachedStep& step, KVCacheLayer& cache) const;
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};
};
TORCH_MODULE(TransformerBlock);

}  // namespace plm::model
