// What `plm generate` and `plm eval` start from: a checkpoint's model on a device, in a dtype, with the
// preprocessing settings and tokenizer it was trained with.
#pragma once

#include <memory>
#include <string>

#include "plm/infer/prompt.h"
#include "plm/model/perception_lm.h"
#include "plm/text/tokenizer.h"

namespace plm::infer {

struct LoadedCheckpoint {
  model::PerceptionLM model{nullptr};  // eval mode, on `device` in `dtype`
  CheckpointSettings settings;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  std::string tokenizer_path;
  bool cuda = false;
  std::string dtype;  // "fp32" or "bf16"
};

/// Loads `ckpt` (any format ckpt::load_model reads). `device`: auto (CUDA when present) | cpu | cuda; `dtype`:
/// fp32 | bf16 | "" (bf16 on CUDA, fp32 on the CPU); `tokenizer`: a path, or "" for the checkpoint's
/// (read_checkpoint_settings). Throws GenerateError when no tokenizer can be found, and the loaders' errors.
LoadedCheckpoint load_for_inference(const std::string& ckpt, const std::string& tokenizer, const std::string& device,
                                    const std::string& dtype);

}  // namespace plm::infer
