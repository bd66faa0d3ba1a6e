#include "plm/ckpt/hf_config.h"

#include <nlohmann/json.hpp>

#include "plm/ckpt/safetensors.h"
#include "plm/model/decoder.h"

using nlohmann::json;

namespace plm::ckpt {

config::ModelArgs model_args_from_hf_config(const std::string& text, const std::string& origin) {
  json c;
  try {
    c = json::parse(text);
  } catch (const json::exception& e) {
    throw CheckpointError("'" + origin + "' is not valid JSON (" + e.what() + ").");
  }
  auto need = [&](const json& obj, const char* key) -> const json& {
    if (!obj.contains(key))
      throw CheckpointError("'" + origin + "' has no '" + key + "'; is it a PerceptionLM config?");
    return obj.at(key);
  };
  const json& t = need(c, "text_config");
  config::ModelArgs a;
  a.dim = need(t, "hidden_size").get<int64_t>();
  a.n_layers = need(t, "num_hidden_layers").get<int64_t>();
  a.n_heads = need(t, "num_attention_heads").get<int64_t>();
  a.n_kv_heads = t.value("num_key_value_heads", *a.n_heads);
  if (t.contains("head_dim") && !t["head_dim"].is_null()) a.head_dim = t["head_dim"].get<int64_t>();
  a.vocab_size = need(t, "vocab_size").get<int64_t>();
  a.norm_eps = t.value("rms_norm_eps", 1e-5);
  a.max_seqlen = t.value("max_position_embeddings", a.max_seqlen);
  // PLM's FFN width is a formula; pick multiple_of so the formula lands on intermediate_size exactly.
  const auto hidden = need(t, "intermediate_size").get<int64_t>();
  const auto base = static_cast<int64_t>(2.0 * (4 * a.dim) / 3.0);
  if (base <= hidden) {
    a.ffn_dim_multiplier.reset();
    a.multiple_of = hidden;
  } else {
    a.ffn_dim_multiplier = (static_cast<double>(hidden) + 0.5) / static_cast<double>(base);
    a.multiple_of = 1;
  }
  const json rope = t.contains("rope_parameters") ? t["rope_parameters"] : t.value("rope_scaling", json());
  a.rope_theta = rope.is_object() && rope.contains("rope_theta") ? rope["rope_theta"].get<double>()
                                                                 : t.value("rope_theta", 10000.0);
  if (rope.is_object() && rope.value("rope_type", std::string()) == "llama3") {
    a.rope_scale_factor = static_cast<int64_t>(rope.value("factor", 1.0));
    a.low_freq_factor = static_cast<int64_t>(rope.value("low_freq_factor", 1.0));
    a.high_freq_factor = static_cast<int64_t>(rope.value("high_freq_factor", 4.0));
    a.old_context_len = rope.value("original_max_position_embeddings", int64_t{8192});
  }
  a.weight_tying = c.value("tie_word_embeddings", t.value("tie_word_embeddings", false));
  a.pooling_ratio = c.value("projector_pooling_ratio", int64_t{1});
  if (c.contains("vision_config")) {
    const json& vc = c["vision_config"];
    const json& m = need(vc, "model_args");
    const std::string arch = vc.value("architecture", std::string());
    const bool gigantic = arch.find("gigantic") != std::string::npos;
    config::VisionModelArgs v;
    // The timm architectures the HF converter uses: PE-Core L/14 (1024 wide, 16 heads, CLS) and G/14 (1536, 16, none).
    v.width = m.value("embed_dim", int64_t{gigantic ? 1536 : 1024});
    v.layers = need(m, "depth").get<int64_t>();
    v.heads = m.value("num_heads", int64_t{16});
    v.mlp_ratio = m.value("mlp_ratio", gigantic ? 8960.0 / 1536.0 : 4.0);
    v.patch_size = m.value("patch_size", int64_t{14});
    const json size = m.value("img_size", json(448));
    v.image_size = size.is_array() ? size[0].get<int64_t>() : size.get<int64_t>();
    v.use_cls_token = c.value("vision_use_cls_token", !gigantic);
    if (m.contains("init_values") && !m["init_values"].is_null()) v.ls_init_value = m["init_values"].get<double>();
    v.use_ln_post = m.value("use_post_transformer_norm", false);
    v.pool_type = "none";
    a.vision_model = v;
  }
  return a;
}

std::string hf_config_json(const config::ModelArgs& a, const std::string& dtype, const HfTokenIds& ids) {
  auto refuse = [](const std::string& key, const std::string& why) {
    throw CheckpointError("cannot write a Hugging Face PerceptionLM config: " + key + " " + why + ".");
  };
  if (!a.vision_model) refuse("model.vision_model", "is null (a text-only decoder has no PerceptionLM form)");
  const config::VisionModelArgs& v = *a.vision_model;
  if (!v.use_abs_posemb) refuse("model.vision_model.use_abs_posemb", "is false (timm's PE always adds one)");
  if (!v.use_rope2d) refuse("model.vision_model.use_rope2d", "is false (timm's PE always applies 2D RoPE)");
  if (!v.use_ln_pre) refuse("model.vision_model.use_ln_pre", "is false (timm's PE always has norm_pre)");
  if (a.sliding_window) refuse("model.sliding_window", "is set (PerceptionLM's Llama attends to every position)");
  const model::DecoderDims d = model::decoder_dims(a);
  json rope = {{"rope_type", "default"}, {"rope_theta", a.rope_theta}};
  if (a.rope_scale_factor != 1)
    rope = {{"rope_type", "llama3"},
            {"rope_theta", a.rope_theta},
            {"factor", static_cast<double>(a.rope_scale_factor)},
            {"low_freq_factor", static_cast<double>(a.low_freq_factor)},
            {"high_freq_factor", static_cast<double>(a.high_freq_factor)},
            {"original_max_position_embeddings", a.old_context_len}};
  const json text = {{"model_type", "llama"},
                     {"hidden_size", d.dim},
                     {"intermediate_size", d.hidden_dim},
                     {"num_hidden_layers", d.n_layers},
                     {"num_attention_heads", d.n_heads},
                     {"num_key_value_heads", d.n_kv_heads},
                     {"head_dim", d.head_dim},
                     {"vocab_size", d.vocab_size},
                     {"rms_norm_eps", a.norm_eps},
                     {"max_position_embeddings", a.max_seqlen},
                     {"rope_parameters", rope},
                     {"hidden_act", "silu"},
                     {"attention_bias", false},
                     {"mlp_bias", false},
                     {"tie_word_embeddings", a.weight_tying},
                     {"bos_token_id", ids.bos},
                     {"eos_token_id", ids.eos}};
  const int64_t grid = v.image_size / v.patch_size;
  // The architecture fixes the CLS token (and with it the RoPE grid's offset); model_args set every size.
  const json vision = {
      {"model_type", "timm_wrapper"},
      {"architecture", v.use_cls_token ? "vit_pe_core_large_patch14_336" : "vit_pe_core_gigantic_patch14_448"},
      {"model_args",
       {{"embed_dim", v.width},
        {"depth", v.layers},
        {"num_heads", v.heads},
        {"mlp_ratio", v.mlp_ratio},
        {"patch_size", v.patch_size},
        {"img_size", {v.image_size, v.image_size}},
        {"global_pool", ""},
        {"use_post_transformer_norm", v.use_ln_post},
        {"init_values", v.ls_init_value ? json(*v.ls_init_value) : json(nullptr)},
        {"ref_feat_shape", {grid, grid}}}}};
  const json config = {{"architectures", {"PerceptionLMForConditionalGeneration"}},
                       {"model_type", "perception_lm"},
                       {"dtype", dtype},
                       {"text_config", text},
                       {"vision_config", vision},
                       {"projector_pooling_ratio", a.pooling_ratio},
                       {"vision_use_cls_token", v.use_cls_token},
                       {"image_token_id", ids.image},
                       {"video_token_id", ids.video},
                       {"tie_word_embeddings", a.weight_tying}};
  return config.dump(2) + "\n";
}

}  // namespace plm::ckpt
