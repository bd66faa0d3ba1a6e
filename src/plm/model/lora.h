// LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as PEFT lays it out: a linear map
// W x + b gains a low-rank update, y = W x + b + scale * B (A x), with A [rank, in] and B [out, rank] stored as the
// host module's `lora_A.weight` and `lora_B.weight`, scale = alpha / rank. The update is added where the linear is
// computed (model/layers.cpp, the vision tower's packed in_proj), so training, validation and cached generation
// all see it. docs/lora.md says which modules can take one and how the names map to PEFT's.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "plm/common/named_tensors.h"

namespace plm::model {

/// One linear map's adapter; empty (`!defined()`) when the map has none.
struct LoraAdapter {
  at::Tensor A, B;  // "lora_A.weight" [rank, in], "lora_B.weight" [out, rank] of the host module
  double scale = 0.0;
  double dropout = 0.0;  // PEFT's lora_dropout: the probability of zeroing an element of the adapter's input

  bool defined() const { return A.defined(); }
  /// y + scale * (drop(x) A^T) B^T, computed in x's dtype; `y` itself when there is no adapter. drop is the
  /// identity unless `training` and dropout > 0, then LoraDropoutScope::drop (below). With B = 0 the result equals
  /// y exactly.
  at::Tensor add_to(const at::Tensor& y, const at::Tensor& x, bool training) const;
  /// Registers `host.lora_A.weight` [rank, in] and `host.lora_B.weight` [out, rank] (uninitialised, `options`) and
  /// returns the adapter over them.
  static LoraAdapter attach(torch::nn::Module& host, int64_t in, int64_t out, int64_t rank, double scale,
                            double dropout, const at::TensorOptions& options);
};

/// Where LoRA dropout's masks come from (docs/lora.md). A block's function (model/units.h) opens a scope naming the
/// keys of its input's rows (one per decoder row or vision chunk, from the sample each holds: model/model_inputs.h)
/// and the block's number; every adapter call inside it draws, for each row, a mask that is a function of (the row's
/// key, the block, the call's index in the block) only. A recomputation of the block (activation checkpointing,
/// full_shard's backward, on whatever thread) opens the same scope and so draws the same masks; N ranks draw 1
/// rank's, and a resume draws the uninterrupted run's. Scopes nest per thread; not copyable.
class LoraDropoutScope {
 public:
  /// Block numbers: decoder block i is i, vision block j is kVisionBlocks + j, the projector kProjector.
  static constexpr uint64_t kVisionBlocks = uint64_t{1} << 32, kProjector = uint64_t{1} << 33;

  /// `row_keys` must outlive the scope; empty: masks come from the default generator (not replayed).
  LoraDropoutScope(const std::vector<uint64_t>& row_keys, uint64_t block);
  ~LoraDropoutScope();
  LoraDropoutScope(const LoraDropoutScope&) = delete;
  LoraDropoutScope& operator=(const LoraDropoutScope&) = delete;

  /// x with each element zeroed with probability p and the others divided by 1 - p (torch's dropout), the mask
  /// drawn as above from the innermost scope of this thread, or from the default generator without one. Throws
  /// c10::Error when the scope's keys do not number x.size(0).
  static at::Tensor drop(const at::Tensor& x, double p);

 private:
  const std::vector<uint64_t>& keys_;
  uint64_t block_;
  uint64_t calls_ = 0;
  LoraDropoutScope* outer_;
};

/// The comma-separated `model.lora.targets` as patterns. Throws config::ConfigError naming the key for an empty one.
std::vector<std::string> lora_target_patterns(const std::string& targets);

/// Whether module `name` (e.g. "layers.3.attention.wq") is a target: a pattern with '*' must match the whole name
/// ('*' is any run of characters, dots included); any other pattern matches the name itself or its last components
/// ("wq", "attention.wq", "layers.3.attention.wq" match; "q" does not); "all" matches every module (PEFT's
/// "all-linear": a YAML value cannot start with '*' unquoted).
bool is_lora_target(const std::string& name, const std::vector<std::string>& patterns);

/// Whether a parameter name is an adapter's (".lora_A.weight" / ".lora_B.weight").
bool is_lora_parameter(const std::string& name);

/// The base weight an adapter updates: "X.lora_A.weight" / "X.lora_B.weight" -> "X.weight", except the vision
/// tower's packed projection "....attn.in_proj" -> "....attn.in_proj_weight".
std::string lora_base_weight(const std::string& adapter_parameter);

/// The adapters folded into their base weights: W + scale * B A, computed in fp32 and stored in W's dtype; the
/// lora_A / lora_B tensors are left out, every other tensor passes unchanged (in order). Throws std::invalid_argument
/// naming the tensor when an adapter lacks its partner or its base weight, or their shapes disagree.
NamedTensors merge_lora(const NamedTensors& tensors, double scale);

}  // namespace plm::model
