// The vision-to-language projector (docs/reference.md 1.4): Linear -> exact GELU -> Linear per token, then adaptive
// average pooling by pooling_ratio over the row-major token grid. Names: vision_projector.projector.{0,2}.
#pragma once

#include "plm/model/layers.h"

namespace plm::model {

struct ProjectorImpl : torch::nn::Module {
  ProjectorImpl(int64_t vision_width, int64_t dim, int64_t pooling_ratio, const at::TensorOptions& options);
  /// [N, L, width] with L = h*h -> [N, (h/r)^2, dim]. Pooling comes after the MLP, in the LLM's width.
  at::Tensor forward(const at::Tensor& x) const;
  Linear linear_0{nullptr}, linear_2{nullptr};  // "projector.0", "projector.2"
  int64_t pooling_ratio;
};
TORCH_MODULE(Projector);

}  // namespace plm::model
