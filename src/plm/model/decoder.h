// The Llama 3 decoder block (plm-spec 1.5): pre-norm attention with GQA and interleaved-pair RoPE, SwiGLU FFN.
// Module and parameter names are Meta's original Llama names (attention.wq, feed_forward.w1, attention_norm, ...).
#pragma once

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

/// `attention`: wq [H*hd, dim], wk/wv [Hkv*hd, dim], wo [dim, H*hd], no biases.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const DecoderDims& d, const at::TensorOptions& options);
  /// x [B, S, dim]; rope tables [S, hd/2]; plain causal attention over the whole row.
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope) const;
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
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope) const;
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};
};
TORCH_MODULE(TransformerBlock);

}  // namespace plm::model
