#include "plm/model/decoder.h"

#include "plm/ops/ops.h"

namespace plm::model {

DecoderDims decoder_dims(const config::ModelArgs& a) {
  DecoderDims d{};
  d.dim = a.dim;
  d.n_layers = a.n_layers;
  d.head_dim = a.head_dim ? *a.head_dim : a.dim / a.n_heads.value_or(1);
  d.n_heads = a.n_heads ? *a.n_heads : a.dim / d.head_dim;
  d.n_kv_heads = a.n_kv_heads.value_or(d.n_heads);
  auto hidden = static_cast<int64_t>(2.0 * (4 * a.dim) / 3.0);
  if (a.ffn_dim_multiplier) hidden = static_cast<int64_t>(*a.ffn_dim_multiplier * static_cast<double>(hidden));
  d.hidden_dim = a.multiple_of * ((hidden + a.multiple_of - 1) / a.multiple_of);
  d.vocab_size = a.vocab_size;
  return d;
}

AttentionImpl::AttentionImpl(const DecoderDims& d, const at::TensorOptions& o)
    : n_heads(d.n_heads), n_kv_heads(d.n_kv_heads), head_dim(d.head_dim) {
  wq = register_module("wq", Linear(d.dim, d.n_heads * d.head_dim, false, o));
  wk = register_module("wk", Linear(d.dim, d.n_kv_heads * d.head_dim, false, o));
  wv = register_module("wv", Linear(d.dim, d.n_kv_heads * d.head_dim, false, o));
  wo = register_module("wo", Linear(d.n_heads * d.head_dim, d.dim, false, o));
}

TokenLayout TokenLayout::rows(const RopeTable& rope, int64_t seqlen) {
  return {rope.cos.slice(0, 0, seqlen).unsqueeze(1), rope.sin.slice(0, 0, seqlen).unsqueeze(1), nullptr};
}

TokenLayout TokenLayout::packed(const RopeTable& rope, const at::Tensor& positions,
                                std::vector<std::vector<int64_t>> segments) {
  TORCH_CHECK(positions.dim() == 2 && positions.scalar_type() == at::kLong, "positions must be int64 [B, S]");
  return {rope.cos.index({positions}).unsqueeze(2), rope.sin.index({positions}).unsqueeze(2),
          std::make_shared<const std::vector<std::vector<int64_t>>>(std::move(segments))};
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const TokenLayout& layout) const {
  const int64_t b = x.size(0), s = x.size(1);
  // [B, S, H, hd]: feature index h * hd + d; the RoPE tables broadcast as [S, 1, hd/2] or [B, S, 1, hd/2].
  const at::Tensor q = ops::rotate_pairs(wq->forward(x).view({b, s, n_heads, head_dim}), layout.cos, layout.sin);
  const at::Tensor k = ops::rotate_pairs(wk->forward(x).view({b, s, n_kv_heads, head_dim}), layout.cos, layout.sin);
  const at::Tensor v = wv->forward(x).view({b, s, n_kv_heads, head_dim});
  const at::Tensor out =
      layout.segments ? ops::packed_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), *layout.segments)
                      : ops::attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), /*causal=*/true);
  return wo->forward(out.transpose(1, 2).reshape({b, s, n_heads * head_dim}));
}

CachedStep CachedStep::prefill(const RopeTable& rope, int64_t batch, int64_t seqlen) {
  CachedStep step;
  step.positions = at::arange(seqlen, rope.cos.options().dtype(at::kLong)).unsqueeze(0).expand({batch, seqlen});
  step.cos = rope.cos.slice(0, 0, seqlen).unsqueeze(1).unsqueeze(0);
  step.sin = rope.sin.slice(0, 0, seqlen).unsqueeze(1).unsqueeze(0);
  step.kv_len = seqlen;
  return step;
}

CachedStep CachedStep::at(const RopeTable& rope, const at::Tensor& positions) {
  TORCH_CHECK(positions.dim() == 2 && positions.scalar_type() == at::kLong, "positions must be int64 [B, S]");
  CachedStep step;
  step.positions = positions;
  step.cos = rope.cos.index({positions}).unsqueeze(2);
  step.sin = rope.sin.index({positions}).unsqueeze(2);
  step.kv_len = positions.max().item<int64_t>() + 1;
  const at::Tensor slots = at::arange(step.kv_len, positions.options());
  step.mask = (slots.view({1, 1, -1}) <= positions.unsqueeze(-1)).unsqueeze(1);
  return step;
}

at::Tensor AttentionImpl::forward_cached(const at::Tensor& x, const CachedStep& step, KVCacheLayer& cache) const {
  const int64_t b = x.size(0), s = x.size(1);
  const at::Tensor q = ops::rotate_pairs(wq->forward(x).view({b, s, n_heads, head_dim}), step.cos, step.sin);
  const at::Tensor k = ops::rotate_pairs(wk->forward(x).view({b, s, n_kv_heads, head_dim}), step.cos, step.sin);
  const at::Tensor v = wv->forward(x).view({b, s, n_kv_heads, head_dim});
  TORCH_CHECK(step.kv_len <= cache.k.size(2), "the step reaches position ", step.kv_len - 1, " but the KV cache holds ",
              cache.k.size(2), " positions");
  at::Tensor out;
  if (!step.mask.defined()) {  // prefill: exactly forward()'s attention, keeping K/V for the next steps
    cache.k.slice(2, 0, s).copy_(k.transpose(1, 2));
    cache.v.slice(2, 0, s).copy_(v.transpose(1, 2));
    out = ops::attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), /*causal=*/true);
  } else {
    // index_put_ on the [B, capacity, Hkv, hd] view writes each (row, position) slot of the cache in place.
    const std::vector<at::indexing::TensorIndex> slots{at::arange(b, step.positions.options()).unsqueeze(1),
                                                       step.positions};
    cache.k.transpose(1, 2).index_put_(slots, k);
    cache.v.transpose(1, 2).index_put_(slots, v);
    out = ops::masked_attention(q.transpose(1, 2), cache.k.slice(2, 0, step.kv_len), cache.v.slice(2, 0, step.kv_len),
                                step.mask);
  }
  return wo->forward(out.transpose(1, 2).reshape({b, s, n_heads * head_dim}));
}

FeedForwardImpl::FeedForwardImpl(const DecoderDims& d, const at::TensorOptions& o) {
  w1 = register_module("w1", Linear(d.dim, d.hidden_dim, false, o));
  w2 = register_module("w2", Linear(d.hidden_dim, d.dim, false, o));
  w3 = register_module("w3", Linear(d.dim, d.hidden_dim, false, o));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) const {
  return w2->forward(ops::swiglu(w1->forward(x), w3->forward(x)));
}

TransformerBlockImpl::TransformerBlockImpl(const DecoderDims& d, double eps, const at::TensorOptions& o) {
  attention = register_module("attention", Attention(d, o));
  feed_forward = register_module("feed_forward", FeedForward(d, o));
  attention_norm = register_module("attention_norm", RMSNorm(d.dim, eps, o));
  ffn_norm = register_module("ffn_norm", RMSNorm(d.dim, eps, o));
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const TokenLayout& layout) const {
  const at::Tensor h = x + attention->forward(attention_norm->forward(x), layout);
  return h + feed_forward->forward(ffn_norm->forward(h));
}

at::Tensor TransformerBlockImpl::forward_cached(const at::Tensor& x, const CachedStep& step,
                                                KVCacheLayer& cache) const {
  const at::Tensor h = x + attention->forward_cached(attention_norm->forward(x), step, cache);
  return h + feed_forward->forward(ffn_norm->forward(h));
}

}  // namespace plm::model
