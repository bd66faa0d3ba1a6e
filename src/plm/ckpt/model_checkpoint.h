// Reading a whole model from whatever checkpoint a user has (docs/reference.md 6.3, 6.5): a PLM folder (params.json +
// consolidated.pth / consolidated.safetensors, Meta-style consolidated.NN.pth parts, or a full_shard training
// checkpoint's shards: ckpt/sharded.h), a single .pth or
// .safetensors file (native or Hugging Face names, recognised by content), or a Hugging Face PerceptionLM folder
// (config.json + model.safetensors or an index with shards).
#pragma once

#include <string>
#include <vector>

#include "plm/ckpt/hf_config.h"
#include "plm/ckpt/name_maps.h"
#include "plm/config/args.h"
#include "plm/model/perception_lm.h"

namespace plm::ckpt {

/// The model configuration stored with a checkpoint: PLM's params.json (the whole TrainArgs; its `model` section)
/// or a Hugging Face config.json (mapped to PLM's keys). `path` is the folder or a file inside it.
/// Throws CheckpointError naming the file when neither exists or a value cannot be mapped, and ConfigError
/// (naming the key) for a params.json with an unknown or mistyped model key.
config::ModelArgs read_model_args(const std::string& path);

/// The checkpoint's tensors under native names (docs/reference.md 1.6) with what was left out and why. Hugging Face
/// names are mapped (q/k rows un-permuted) using `args`; the tied duplicate `output.tied_module.weight` and RoPE
/// buffers are left out. A LoRA run's step folder (ckpt/lora_base.h) gives its base checkpoint's tensors followed by
/// the adapters; CheckpointError when the base's weights no longer have the recorded checksum.
MappedTensors read_native_weights(const std::string& path, const config::ModelArgs& args);

/// What loading put where.
struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;     // parameters of the model the checkpoint lacks
  std::vector<std::string> unexpected;  // checkpoint tensors the model has no parameter for
  std::vector<std::string> mismatched;  // "name: checkpoint [a, b] vs model [c, d]"
  std::vector<IgnoredKey> ignored;      // left out on purpose by the name mapping

  /// One paragraph listing the problems (at most `limit` names per kind), "" when there are none.
  std::string problems(size_t limit = 8) const;
};

/// Copies `weights` into the parameters of `model` with the same name (converted to each parameter's dtype and
/// device, without recording autograd). Mis-shaped tensors are not copied. With `strict`, any missing, unexpected
/// or mis-shaped tensor throws CheckpointError whose message names them (`origin` says which checkpoint);
/// otherwise they are only reported.
LoadReport load_weights(model::PerceptionLMImpl& model, const MappedTensors& weights, bool strict,
                        const std::string& origin);

/// How a run starts (docs/reference.md 5.2 step 5, 6.3, 6.4), given `checkpoint.init_ckpt_path` and
/// `vision_model_path`:
/// 1. everything is initialised (model/init.h), so nothing is left uninitialised whatever the files hold;
/// 2. a PE file (vision_model_path) is read by PLM's load_ckpt rules (unwrap state_dict/weights, strip module./
///    visual., drop blocks beyond `layers`, attn_pool, proj, ln_post); a position embedding for another grid
///    (PE-Core-L14-336's 24x24 for 448 tiles) is resampled as apps/plm/interpolate_PE_pos_embed.py does;
/// 3. init_ckpt_path (a PLM consolidated folder or file, Meta's original Llama folder, a Hugging Face folder) is
///    loaded over it. Like PLM, missing and unexpected tensors are only reported (LayerScale is missing at stage 2
///    by design), with what was ignored. The projector is never taken from a PE file.
/// A tensor the checkpoint has in another shape is an error, as in the reference: CheckpointError names the key
/// (checkpoint.init_ckpt_path or vision_model_path), the file, each tensor with both shapes and the config key that
/// likely differs (model.vocab_size, model.dim, model.vision_model.width, ...). Also thrown for unreadable files.
LoadReport init_from_checkpoints(model::PerceptionLMImpl& model, const config::CheckpointArgs& checkpoint);

/// read_model_args + build + load (strict): the model exactly as the checkpoint describes it, fp32 on the CPU.
model::PerceptionLM load_model(const std::string& path, LoadReport* report = nullptr);

}  // namespace plm::ckpt
