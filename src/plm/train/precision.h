// Mixed precision as PLM trains (docs/reference.md 5.4): the model computes in `distributed.model_dtype` (bf16: every
// parameter is a bf16 copy, as FSDP2's MixedPrecisionPolicy(param_dtype=bf16) gathers them) while the weights the
// optimizer updates, their gradients and the optimizer state stay fp32 (reduce_dtype=fp32). RMSNorm, both RoPEs,
// softmax and the loss upcast to fp32 inside the model's ops. With fp32 the masters are the parameters themselves.
#pragma once

#include <ATen/ATen.h>

#include "plm/model/perception_lm.h"
#include "plm/train/adamw.h"

namespace plm::train {

/// The fp32 master copy of every parameter of a model that computes in a 16-bit dtype (or, in fp32, the parameters
/// themselves): owns the masters and their fp32 gradients, and the link to the model's compute-dtype parameters.
class MasterWeights {
 public:
  /// Takes the fp32 parameters of `model` as masters (all of them, frozen ones too: checkpoints keep them in full
  /// precision) and, for a 16-bit `compute` dtype, turns the model's parameters into copies in that dtype. With
  /// model.lora the frozen base gets no fp32 master: its "master" is the compute-dtype parameter itself (a LoRA
  /// run's checkpoints hold the adapters only, and the base is never updated), which saves 4 bytes a base
  /// parameter. Call after apply_freezing(): trainable() follows requires_grad.
  MasterWeights(model::PerceptionLMImpl& model, at::ScalarType compute);

  /// Every parameter's fp32 master (a LoRA base parameter: itself, in the compute dtype), by the model's name.
  const NamedTensors& all() const { return masters_; }
  /// The masters of trainable parameters (what AdamW updates); their .grad holds the accumulated fp32 gradient.
  const NamedTensors& trainable() const { return trainable_; }

  /// After a micro-batch's backward: adds each model gradient (upcast to fp32) into its master's gradient and drops
  /// the model's, so gradients accumulate in fp32 across micro-batches as FSDP's fp32 reduction does. In fp32 it
  /// only gives gradients that share storage with another tensor (autograd's views) storage of their own, so that
  /// the next micro-batch's in-place accumulation cannot reach another parameter's gradient.
  void accumulate_gradients();

  /// After an optimizer step or a load: writes the masters into the model's parameters (rounding to the compute
  /// dtype). No-op in fp32 (they are the same tensors).
  void publish();

  at::ScalarType compute_dtype() const { return compute_; }

 private:
  NamedTensors masters_, trainable_;
  std::vector<at::Tensor> model_params_;  // parallel to masters_
  std::vector<size_t> trainable_index_;   // indices into masters_
  at::ScalarType compute_;
};

}  // namespace plm::train
