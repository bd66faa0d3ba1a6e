#include "plm/infer/sampling.h"

#include <fmt/format.h>

#include <string>

#include "plm/infer/infer_error.h"

namespace plm::infer {

void SamplingOptions::check() const {
  if (!(temperature >= 0.0))
    throw GenerateError("bad_option",
                        "--temperature must be >= 0 (0 is greedy), got " + fmt::format("{}", temperature) + ".");
  if (top_p && !(*top_p > 0.0 && *top_p <= 1.0))
    throw GenerateError("bad_option", "--top-p must be in (0, 1], got " + fmt::format("{}", *top_p) + ".");
  if (top_k && *top_k < 1)
    throw GenerateError("bad_option", "--top-k must be at least 1, got " + std::to_string(*top_k) + ".");
}

at::Tensor sample_tokens(const at::Tensor& logits, const SamplingOptions& o, at::Generator& generator) {
  TORCH_CHECK(logits.dim() == 2, "sample_tokens expects logits [B, V]");
  if (o.temperature == 0.0) return logits.argmax(-1).cpu();
  at::Tensor probs = at::softmax(logits.to(at::kFloat).cpu() / o.temperature, -1);
  if (o.top_p) {
    const auto [sorted, order] = probs.sort(-1, /*descending=*/true);
    const at::Tensor kept = sorted.masked_fill(sorted.cumsum(-1) - sorted > *o.top_p, 0.0);
    return order.gather(-1, at::multinomial(kept, 1, false, generator)).squeeze(-1);
  }
  if (o.top_k) {
    const int64_t k = std::min<int64_t>(*o.top_k, probs.size(-1));
    const at::Tensor kth = std::get<0>(probs.topk(k, -1)).narrow(-1, k - 1, 1);
    probs = probs.masked_fill(probs < kth, 0.0);
    probs = probs / probs.sum(-1, /*keepdim=*/true);
  }
  return at::multinomial(probs, 1, false, generator).squeeze(-1);
}

}  // namespace plm::infer
