// (name, tensor) pairs in a meaningful order: a model's parameters in registration order, a checkpoint's entries,
// the tensors an optimizer updates. A ckpt::TensorMap's entries convert: `NamedTensors(map.begin(), map.end())`.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace plm {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

}  // namespace plm
