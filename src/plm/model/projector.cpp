#include "plm/model/projector.h"

#include <cmath>

namespace plm::model {

ProjectorImpl::ProjectorImpl(int64_t width, int64_t dim, int64_t ratio, const at::TensorOptions& o)
    : pooling_ratio(ratio) {
  auto mlp = register_module("projector", std::make_shared<torch::nn::Module>());
  linear_0 = mlp->register_module("0", Linear(width, dim, true, o));
  linear_2 = mlp->register_module("2", Linear(dim, dim, true, o));
}

at::Tensor ProjectorImpl::forward(const at::Tensor& x) const {
  at::Tensor y = linear_2->forward(at::gelu(linear_0->forward(x)));
  const int64_t n = y.size(0), tokens = y.size(1), c = y.size(2);
  const auto h = static_cast<int64_t>(std::sqrt(static_cast<double>(tokens)));
  TORCH_CHECK(h * h == tokens, "the projector pools a square token grid; got ", tokens, " tokens");
  y = y.permute({0, 2, 1}).reshape({n, c, h, h});
  y = at::adaptive_avg_pool2d(y, {h / pooling_ratio, h / pooling_ratio});
  return y.flatten(2).transpose(1, 2);
}

}  // namespace plm::model
