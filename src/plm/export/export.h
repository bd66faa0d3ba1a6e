// Taking a model out of plm (docs/export.md): a Hugging Face folder that transformers' PerceptionLM loads with
// from_pretrained, and a PLM release folder that the reference's own loader reads. Both read any checkpoint that
// ckpt::load_model reads (training step folders, sharded or not, consolidated folders, HF folders, single files).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace plm::exporting {

struct ExportOptions {
  std::string tokenizer;                     // the tokenizer file to ship; "" = the checkpoint's own, if it names one
  std::string dtype;                         // "fp32" | "bf16" | "fp16"; "" = as stored
  uint64_t max_shard_bytes = 5'000'000'000;  // HF safetensors shards (transformers' save_pretrained default, 5GB)
  bool merge_lora = false;  // export_plm: fold LoRA adapters into the base weights (export_hf always does)
};

/// Writes `out_dir` as a Hugging Face PerceptionLMForConditionalGeneration folder: config.json (ckpt/hf_config.h, with
/// the tokenizer's image, video, bos and eos ids), generation_config.json, the weights in HF names and layouts
/// (ckpt::native_to_hf) as model.safetensors or shards + model.safetensors.index.json, the processor's settings
/// (preprocessor_config.json, video_preprocessor_config.json, processor_config.json: tile size, tiles, vision input
/// type, frames, patch size, pooling, PLM's 0.5/0.5 normalisation) and, when there is a tokenizer, tokenizer.model
/// (the file itself), plus tokenizer.json and tokenizer_config.json for a tiktoken one (export/hf_tokenizer.h). The
/// checkpoint's tensors must be exactly the model's parameters (strict: CheckpointError names what is missing,
/// unexpected or mis-shaped). A LoRA checkpoint is written with its adapters folded into the base weights
/// (model::merge_lora) as a plain model. Returns the files written.
std::vector<std::string> export_hf(const std::string& ckpt, const std::string& out_dir, const ExportOptions& options);

/// Writes `out_dir` as a PEFT LoRA adapter folder for the Hugging Face form of the run's base model (export_hf of
/// the base checkpoint): adapter_config.json (peft_type LORA, r, lora_alpha, lora_dropout, target_modules as the
/// HF modules' full names, base_model_name_or_path = the base checkpoint) and adapter_model.safetensors
/// ("base_model.model.<HF module>.lora_A.weight" / "lora_B.weight"; B's rows for q_proj / k_proj in transformers'
/// rotate-half order, as the base weights are). PeftModel.from_pretrained(base, out_dir) then computes the LoRA
/// run's model. Throws CheckpointError when the checkpoint has no model.lora.
std::vector<std::string> export_peft(const std::string& ckpt, const std::string& out_dir, const ExportOptions& options);

/// Writes `out_dir` as a PLM release folder: consolidated.pth (PLM's names; the tied output as PLM's TiedLinear
/// lists it) and params.json ({"model": ..., "data": ...} with the checkpoint's data settings and, when there is a
/// tokenizer, data.tokenizer_path = "tokenizer.model", copied beside it). Strict as export_hf. A LoRA checkpoint keeps
/// its adapters (and model.lora) unless `merge_lora`. Returns the files.
std::vector<std::string> export_plm(const std::string& ckpt, const std::string& out_dir, const ExportOptions& options);

}  // namespace plm::exporting
