// The model's units (docs/ARCHITECTURE.md "Distributed"): the groups of parameters that fully sharded data parallel
// (dist/fsdp.h) gathers, runs and frees together, named like the parameters they hold:
//   tok_embeddings                          the token embedding (also the output layer when weights are tied)
//   vision_model                            the vision stem (conv1, class and position embeddings, ln_pre) and ln_post
//   vision_model.transformer.resblocks.<j>  one vision block
//   vision_projector                        the projector
//   layers.<i>                              one decoder block
//   norm                                    the final RMSNorm
//   output                                  the output layer (untied weights only)
// The model runs every step that reads parameters through run_unit(): plainly, with activation checkpointing
// (model/activation_checkpoint.h), or through a UnitRunner that a sharded trainer installs.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "plm/model/activation_checkpoint.h"

namespace plm::model {

/// Runs one unit's computation. Installed with PerceptionLMImpl::set_unit_runner.
struct UnitRunner {
  virtual ~UnitRunner() = default;
  /// y = fn(x), where fn reads the parameters of `unit` and no other unit's (plus captured tensors that need no
  /// gradient). fn must give the same result when called again (it may be recomputed in backward).
  virtual at::Tensor run(const std::string& unit, const Block& fn, const at::Tensor& x) = 0;
};

/// The unit a parameter belongs to (see above), from its name in PerceptionLMImpl::named_parameters().
std::string unit_of(const std::string& parameter_name);

/// y = fn(x) for `unit`: through `runner` when one is installed, else checkpointed (over `params`) when
/// `checkpoint`, else directly.
at::Tensor run_unit(UnitRunner* runner, const std::string& unit, const Block& fn, const at::Tensor& x,
                    bool checkpoint = false, const std::vector<at::Tensor>& params = {});

}  // namespace plm::model
