#include "plm/ops/ops.h"

namespace plm::ops {

namespace {

/// The type the "in fp32" ops compute in: fp32, or the input's own type when that is wider.
at::ScalarType at_least_float(const at::Tensor& x) {
  return at::promote_types(x.scalar_type(), at::kFloat);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                     std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of key/value heads");
  const bool gqa = q.size(1) != k.size(1);
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, causal, scale, gqa);
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of key/value heads");
  TORCH_CHECK(mask.scalar_type() == at::kBool, "the attention mask must be boolean");
  const bool gqa = q.size(1) != k.size(1);
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
