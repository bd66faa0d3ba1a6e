// Parameter-holding layers shared by the vision encoder, projector and decoder. Parameters are created
// uninitialised with the given options (device may be meta: shapes without memory); model/init.h fills them.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "plm/model/lora.h"

namespace plm::model {

/// y = x W^T + b: parameters "weight" [out, in] and, if `bias`, "bias" [out]; plus a LoRA update once add_lora has
/// registered "lora_A.weight" [rank, in] and "lora_B.weight" [out, rank] (model/lora.h).
struct LinearImpl : torch::nn::Module {
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  void add_lora(int64_t rank, double scale, double dropout);  // adapter parameters with the weight's options
  at::Tensor weight, bias;
  LoraAdapter lora;
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
