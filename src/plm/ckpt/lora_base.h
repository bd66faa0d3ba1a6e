// The base model under a LoRA run's checkpoint (docs/lora.md). A LoRA run's step folder holds the adapters and their
// optimizer state only; `lora_base.json` beside them names the base checkpoint (checkpoint.init_ckpt_path, made
// absolute) and a checksum of its weights, so that resuming or loading against another base is refused instead of
// silently giving another model.
#pragma once

#include <optional>
#include <string>

#include "plm/common/named_tensors.h"

namespace plm::ckpt {

/// The file in a LoRA run's step folder.
inline constexpr const char* kLoraBaseFile = "lora_base.json";

struct LoraBase {
  std::string path;      // the base checkpoint, absolute
  std::string checksum;  // lora_base_checksum of its weights
};

/// "crc32:xxxxxxxx" over every tensor that is not an adapter, in name order: its name, dtype, shape and bytes as the
/// checkpoint stores them (so bf16 and fp32 copies of one model differ). Reads every byte once (a few seconds per
/// GB on one core).
std::string lora_base_checksum(const NamedTensors& base);

/// lora_base.json's text, and back. from_json throws CheckpointError naming `origin` for a malformed file.
std::string to_json(const LoraBase& base);
LoraBase lora_base_from_json(const std::string& text, const std::string& origin);

/// The record in `step_dir`, if it has one.
std::optional<LoraBase> read_lora_base(const std::string& step_dir);

}  // namespace plm::ckpt
