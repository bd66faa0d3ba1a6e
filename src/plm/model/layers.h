// Parameter-holding layers shared by the vision encoder, projector and decoder. Parameters are created
// uninitialised with the given options (device may be meta: shapes without memory); model/init.h fills them.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace plm::model {

/// y = x W^T + b: parameters "weight" [out, in] and, if `bias`, "bias" [out].
struct LinearImpl : torch::nn::Module {
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

/// LayerNorm over the last dimension with eps 1e-5, "weight" and "bias" (the Perception Encoder's norm_layer).
struct LayerNormImpl : torch::nn::Module {
  LayerNormImpl(int64_t dim, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
};
TORCH_MODULE(LayerNorm);

/// RMSNorm with "weight" [dim], computed in fp32 (ops::rms_norm).
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

}  // namespace plm::model
