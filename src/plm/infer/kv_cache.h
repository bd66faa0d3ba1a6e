// The KV cache of generation (docs/reference.md 8 "KV cache"); PerceptionLMImpl::hidden_cached runs the decoder through
// it.
//
// Layout: per layer, K and V of shape [B, Hkv, capacity, hd] in the model's parameter dtype (bf16 or fp32), keys
// stored after RoPE, GQA heads un-repeated (SDPA's enable_gqa repeats them at read time). Rows are right-padded:
// slot j of row b holds row b's token at position j, so a token's RoPE position and its cache slot are the same
// number, and a query at position p may read exactly the slots 0..p of its row (model::CachedStep's mask).
#pragma once

#include <vector>

#include "plm/model/perception_lm.h"

namespace plm::infer {

/// The keys and values of every decoder block for a batch of rows being generated (layout above); owns the tensors.
class KVCache {
 public:
  /// Zeroed K/V for `batch` rows of `capacity` positions, in the dtype and on the device of `model`'s parameters.
  KVCache(const model::PerceptionLMImpl& model, int64_t batch, int64_t capacity);

  int64_t batch() const { return layers_.front().k.size(0); }
  int64_t capacity() const { return layers_.front().k.size(2); }
  model::KVCacheLayer& layer(size_t i) { return layers_.at(i); }
  /// One entry per decoder block, for PerceptionLMImpl::hidden_cached.
  std::vector<model::KVCacheLayer>& layers() { return layers_; }

  /// A new cache whose row r is a copy of row rows[r] of this one (rows: int64 [R] on the cache's device); used to
  /// continue one prefilled prompt in several ways (scoring).
  KVCache select_rows(const at::Tensor& rows) const;

 private:
  KVCache() = default;
  std::vector<model::KVCacheLayer> layers_;
};

/// The decoder's RoPE table for positions 0..capacity-1 (model/rope.h), on `model`'s device.
model::RopeTable rope_table(const model::PerceptionLMImpl& model, int64_t capacity);

}  // namespace plm::infer
