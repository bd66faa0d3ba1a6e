#include "plm/infer/kv_cache.h"

namespace plm::infer {

KVCache::KVCache(const model::PerceptionLMImpl& model, int64_t batch, int64_t capacity) {
  const auto& d = model.dims;
  const at::TensorOptions options = model.tok_embeddings.options().requires_grad(false);
  layers_.reserve(static_cast<size_t>(d.n_layers));
  for (int64_t i = 0; i < d.n_layers; ++i)
    layers_.push_back({at::zeros({batch, d.n_kv_heads, capacity, d.head_dim}, options),
                       at::zeros({batch, d.n_kv_heads, capacity, d.head_dim}, options)});
}

KVCache KVCache::select_rows(const at::Tensor& rows) const {
  KVCache out;
  out.layers_.reserve(layers_.size());
  for (const auto& l : layers_) out.layers_.push_back({l.k.index_select(0, rows), l.v.index_select(0, rows)});
  return out;
}

model::RopeTable rope_table(const model::PerceptionLMImpl& model, int64_t capacity) {
  // Built on the CPU (decoder_rope's arange is a CPU tensor), then moved: the same fp32 values on any device.
  const model::RopeTable t = model::decoder_rope(model.rope_frequencies.cpu(), capacity);
  const at::Device device = model.tok_embeddings.device();
  return {t.cos.to(device), t.sin.to(device)};
}

}  // namespace plm::infer
