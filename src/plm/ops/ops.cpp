#include "plm/ops/ops.h"

#include <ATen/SDPBackend.h>
#include <ATen/ops/_fused_sdp_choice.h>

#include <mutex>
#include <set>

#include "plm/common/log.h"

namespace plm::ops {

namespace {

/// The type the "in fp32" ops compute in: fp32, or the input's own type when that is wider.
at::ScalarType at_least_float(const at::Tensor& x) {
  return at::promote_types(x.scalar_type(), at::kFloat);
}

const char* backend_name(int64_t choice) {
  switch (static_cast<at::SDPBackend>(choice)) {
    case at::SDPBackend::math:
      return "math";
    case at::SDPBackend::flash_attention:
      return "flash";
    case at::SDPBackend::efficient_attention:
      return "efficient";
    case at::SDPBackend::cudnn_attention:
      return "cudnn";
    case at::SDPBackend::overrideable:
      return "overrideable";
    default:
      return "none";
  }
}

// Logs attention_backend() the first time a (device, dtype, head size, kind) meets attention; later calls of the
// same kind cost one string and a set lookup.
void log_backend_once(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& mask, bool causal, std::optional<double> scale) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  const char* kind = mask ? "masked" : causal ? "causal" : "full";
  const std::string key =
      fmt::format("{} {} head size {} {}", q.device().str(), c10::toString(q.scalar_type()), q.size(-1), kind);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!seen.insert(key).second) return;
  }
  log::info("attention ({}): {} kernel", key, attention_backend(q, k, v, mask, causal, scale));
}

}  // namespace

std::string attention_backend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& mask, bool causal, std::optional<double> scale) {
  const bool gqa = q.size(1) != k.size(1);
  return backend_name(at::_fused_sdp_choice(q, k, v, mask, /*dropout_p=*/0.0, causal, scale, gqa));
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                     std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of key/value heads");
  const bool gqa = q.size(1) != k.size(1);
  log_backend_once(q, k, v, std::nullopt, causal, scale);
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, causal, scale, gqa);
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of key/value heads");
  TORCH_CHECK(mask.scalar_type() == at::kBool, "the attention mask must be boolean");
  const bool gqa = q.size(1) != k.size(1);
  log_backend_once(q, k, v, mask, /*causal=*/false, scale);
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/false, scale, gqa);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at_least_float(x));
  const at::Tensor normed = xf * at::rsqrt((xf * xf).mean(-1, /*keepdim=*/true) + eps);
  return (normed * weight.to(xf.scalar_type())).to(x.scalar_type());
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  return at::silu(gate) * up;
}

at::Tensor rotate_pairs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const at::Tensor pairs = x.to(at_least_float(x)).unflatten(-1, {x.size(-1) / 2, 2});
  const at::Tensor x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  const at::Tensor out0 = x0 * cos - x1 * sin;
  const at::Tensor out1 = x1 * cos + x0 * sin;
  return at::stack({out0, out1}, -1).flatten(-2).to(x.scalar_type());
}

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return at::nll_loss(at::log_softmax(logits.to(at_least_float(logits)), -1), targets);
}

}  // namespace plm::ops
