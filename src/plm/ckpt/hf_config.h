// A PLM model configuration in Hugging Face's words, both ways: the `config.json` of transformers'
// PerceptionLMForConditionalGeneration (a Llama text_config and a timm_wrapper vision_config over timm's Eva PE
// architectures, as transformers' convert_perception_lm_weights_to_hf.py writes it) <-> the `model` section of PLM's
// params.json. docs/export.md lists which keys carry which fields and what has no Hugging Face form.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plm/config/args.h"

namespace plm::ckpt {

/// The PLM model keys of a Hugging Face PerceptionLM config.json (its parsed text). The FFN width is matched by
/// choosing multiple_of (or ffn_dim_multiplier) so that PLM's formula lands on intermediate_size exactly; the vision
/// tower's CLS token and defaults follow the timm architecture named (PE-Core L/14 with CLS, G/14 without).
config::ModelArgs model_args_from_hf_config(const std::string& json_text, const std::string& origin);

/// The token ids a Hugging Face config names: PLM's Llama 3 tokenizer's by default.
struct HfTokenIds {
  int64_t image = 128002;  // <|image|>
  int64_t video = 128003;  // <|reserved_special_token_1|>: PLM's tokenizer has no video token (frames take
                           // <|image|>); transformers' PerceptionLM configs name this id
  int64_t bos = 128000;    // <|begin_of_text|>
  std::vector<int64_t> eos{128001, 128009};  // <|end_of_text|>, <|eot_id|>
};

/// The config.json text (2-space indented JSON) for `args`, stored in `dtype` ("float32", "bfloat16", "float16"),
/// such that model_args_from_hf_config gives back a model of the same shapes and numerics (decoder sizes, RoPE
/// theta and Llama 3 scaling, norm eps, tying, pooling, the vision tower's sizes, CLS token, LayerScale and ln_post).
/// Throws CheckpointError (one sentence naming the model key) for what transformers' PerceptionLM cannot express: no
/// vision tower, no absolute position embedding, no 2D RoPE, no ln_pre, or the decoder's sliding window.
std::string hf_config_json(const config::ModelArgs& args, const std::string& dtype, const HfTokenIds& ids = {});

}  // namespace plm::ckpt
