#include "plm/model/layers.h"

#include "plm/ops/ops.h"

namespace plm::model {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias, const at::TensorOptions& o) {
  weight = register_parameter("weight", at::empty({out, in}, o));
  if (with_bias) bias = register_parameter("bias", at::empty({out}, o));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const {
  return lora.add_to(at::linear(x, weight, bias), x, is_training());
}

void LinearImpl::add_lora(int64_t rank, double scale, double dropout) {
  lora = LoraAdapter::attach(*this, weight.size(1), weight.size(0), rank, scale, dropout, weight.options());
}

LayerNormImpl::LayerNormImpl(int64_t dim, const at::TensorOptions& o) {
  weight = register_parameter("weight", at::empty({dim}, o));
  bias = register_parameter("bias", at::empty({dim}, o));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) const {
  return ops::layer_norm(x, weight, bias);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const at::TensorOptions& o) : eps(eps_) {
  weight = register_parameter("weight", at::empty({dim}, o));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) const {
  return ops::rms_norm(x, weight, eps);
}

}  // namespace plm::model
