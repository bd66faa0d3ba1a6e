#include "plm/ckpt/name_maps.h"

#include "plm/model/vision.h"

#include <algorithm>
#include <cctype>
#include <string_view>
#include <unordered_set>

#include "plm/ckpt/safetensors.h"

namespace plm::ckpt {
namespace {

// How a tensor's layout differs between the native and the HF checkpoint.
enum class Relayout { none, q_rows, k_rows, cls_token, pos_embed };

// One name correspondence. '#' in a pattern stands for a decimal layer/block index.
struct Rule {
  std::string hf;
  std::string native;
  Relayout relayout = Relayout::none;
};

const std::string kTimm = "model.vision_tower.timm_model.";
const std::string kText = "model.language_model.";

// The whole HF <-> native table (transformers' convert_perception_lm_weights_to_hf.py for the decoder and
// projector; timm eva.py _convert_pe swaps for the vision tower). The native column doubles as the list of
// parameter names PLM's encoder and decoder have, for the PE and Meta mappings.
const std::vector<Rule>& rules() {
  static const std::vector<Rule> table = [] {
    std::vector<Rule> r = {
        {kText + "embed_tokens.weight", "tok_embeddings.weight"},
        {kText + "norm.weight", "norm.weight"},
        {"lm_head.weight", "output.weight"},
        {kText + "layers.#.self_attn.q_proj.weight", "layers.#.attention.wq.weight", Relayout::q_rows},
        {kText + "layers.#.self_attn.k_proj.weight", "layers.#.attention.wk.weight", Relayout::k_rows},
        {kText + "layers.#.self_attn.v_proj.weight", "layers.#.attention.wv.weight"},
        {kText + "layers.#.self_attn.o_proj.weight", "layers.#.attention.wo.weight"},
        {kText + "layers.#.mlp.gate_proj.weight", "layers.#.feed_forward.w1.weight"},
        {kText + "layers.#.mlp.down_proj.weight", "layers.#.feed_forward.w2.weight"},
        {kText + "layers.#.mlp.up_proj.weight", "layers.#.feed_forward.w3.weight"},
        {kText + "layers.#.input_layernorm.weight", "layers.#.attention_norm.weight"},
        {kText + "layers.#.post_attention_layernorm.weight", "layers.#.ffn_norm.weight"},
        {kTimm + "patch_embed.proj.weight", "vision_model.conv1.weight"},
        {kTimm + "cls_token", "vision_model.class_embedding", Relayout::cls_token},
        {kTimm + "pos_embed", "vision_model.positional_embedding", Relayout::pos_embed},
        {kTimm + "blocks.#.attn.qkv.weight", "vision_model.transformer.resblocks.#.attn.in_proj_weight"},
        {kTimm + "blocks.#.attn.qkv.bias", "vision_model.transformer.resblocks.#.attn.in_proj_bias"},
        {kTimm + "blocks.#.gamma_1", "vision_model.transformer.resblocks.#.ls_1.gamma"},
        {kTimm + "blocks.#.gamma_2", "vision_model.transformer.resblocks.#.ls_2.gamma"},
    };
    const std::pair<std::string, std::string> with_bias[] = {
        {kTimm + "norm_pre", "vision_model.ln_pre"},
        {kTimm + "norm", "vision_model.ln_post"},
        {kTimm + "blocks.#.norm1", "vision_model.transformer.resblocks.#.ln_1"},
        {kTimm + "blocks.#.norm2", "vision_model.transformer.resblocks.#.ln_2"},
        {kTimm + "blocks.#.attn.proj", "vision_model.transformer.resblocks.#.attn.out_proj"},
        {kTimm + "blocks.#.mlp.fc1", "vision_model.transformer.resblocks.#.mlp.c_fc"},
        {kTimm + "blocks.#.mlp.fc2", "vision_model.transformer.resblocks.#.mlp.c_proj"},
        {"model.multi_modal_projector.linear_1", "vision_projector.projector.0"},
        {"model.multi_modal_projector.linear_2", "vision_projector.projector.2"},
    };
    for (const auto& [hf, native] : with_bias) {
      r.push_back({hf + ".weight", native + ".weight"});
      r.push_back({hf + ".bias", native + ".bias"});
    }
    return r;
  }();
  return table;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Whether `key` matches `pattern`; if the pattern has a '#', `index` receives the digits it stood for.
bool match(std::string_view pattern, std::string_view key, std::string* index) {
  const size_t hash = pattern.find('#');
  if (hash == std::string_view::npos) return pattern == key;
  const std::string_view prefix = pattern.substr(0, hash), suffix = pattern.substr(hash + 1);
  if (key.size() <= prefix.size() + suffix.size() || !starts_with(key, prefix) || !ends_with(key, suffix)) {
    return false;
  }
  const std::string_view digits = key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return false;
  index->assign(digits);
  return true;
}

std::string substitute(const std::string& pattern, const std::string& index) {
  const size_t hash = pattern.find('#');
  if (hash == std::string::npos) return pattern;
  return pattern.substr(0, hash) + index + pattern.substr(hash + 1);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

at::Tensor permute_rows(const at::Tensor& w, int64_t n_heads, int64_t head_dim, bool to_rotate_half) {
  TORCH_CHECK(head_dim > 0 && head_dim % 2 == 0 && n_heads > 0,
              "q/k permutation needs n_heads > 0 and an even "
              "head_dim > 0, got n_heads ",
              n_heads, ", head_dim ", head_dim);
  TORCH_CHECK(w.dim() >= 1 && w.size(0) == n_heads * head_dim, "q/k permutation: tensor of shape ", w.sizes(),
              " does not have n_heads * head_dim = ", n_heads * head_dim, " rows");
  // A row index is (head, pair i, member j) natively and (head, member j, pair i) in HF's rotate-half layout.
  const int64_t rest = w.numel() / w.size(0);
  const auto from = to_rotate_half ? std::vector<int64_t>{n_heads, head_dim / 2, 2, rest}
                                   : std::vector<int64_t>{n_heads, 2, head_dim / 2, rest};
  return w.reshape(from).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// Applies `relayout` to `t` (HF -> native when !to_hf); `key` names the input tensor for errors.
at::Tensor relayout_tensor(const at::Tensor& t, Relayout relayout, bool to_hf, const DecoderLayout& layout,
                           const std::string& key) {
  auto rows = [&](int64_t heads) {
    if (t.dim() != 2 || t.size(0) != heads * layout.head_dim || layout.head_dim % 2 != 0) {
      throw CheckpointError("Tensor " + key + " has shape " + shape_of(t) + " but the model config says " +
                            std::to_string(heads) + " heads of head_dim " + std::to_string(layout.head_dim) +
                            ": check n_heads / n_kv_heads / head_dim against the checkpoint.");
    }
    return permute_rows(t, heads, layout.head_dim, to_hf);
  };
  switch (relayout) {
    case Relayout::none:
      return t;
    case Relayout::q_rows:
      return rows(layout.n_heads);
    case Relayout::k_rows:
      return rows(layout.n_kv_heads);
    case Relayout::cls_token:
      if (t.dim() == 0 || t.numel() != t.size(-1)) {
        throw CheckpointError("Tensor " + key + " has shape " + shape_of(t) + "; a class token is [W] or [1, 1, W].");
      }
      return to_hf ? t.reshape({1, 1, t.numel()}) : t.reshape({t.numel()});
    case Relayout::pos_embed:
      if (to_hf ? t.dim() != 2 : (t.dim() != 3 || t.size(0) != 1)) {
        throw CheckpointError("Tensor " + key + " has shape " + shape_of(t) + "; a position embedding is " +
                              (to_hf ? "[N, W] natively." : "[1, N, W] in timm."));
      }
      return to_hf ? t.unsqueeze(0) : t.squeeze(0);
  }
  return t;
}

// Collects mapped tensors, refusing two inputs that land on one name.
class Output {
 public:
  void add(const std::string& from, std::string name, at::Tensor t) {
    if (!seen_.insert(name).second) {
      throw CheckpointError("Two checkpoint tensors map to " + name + " (the second is " + from +
                            "): the checkpoint has duplicate or conflicting keys.");
    }
    result_.tensors.emplace_back(std::move(name), std::move(t));
  }
  void ignore(const std::string& key, std::string reason) { result_.ignored.push_back({key, std::move(reason)}); }
  MappedTensors take() { return std::move(result_); }

 private:
  MappedTensors result_;
  std::unordered_set<std::string> seen_;
};

constexpr const char* kRopeBuffer = "RoPE buffer, recomputed from the config";
constexpr const char* kTied = "weight tying: PLM reuses tok_embeddings.weight";
constexpr const char* kUnknown = "unknown key";

MappedTensors map_with_table(const NamedTensors& in, const DecoderLayout& layout, bool to_hf) {
  Output out;
  std::string index;
  for (const auto& [key, tensor] : in) {
    if (layout.weight_tying && (key == (to_hf ? "output.weight" : "lm_head.weight"))) {
      out.ignore(key, kTied);
      continue;
    }
    const Rule* hit = nullptr;
    for (const Rule& rule : rules()) {
      if (match(to_hf ? rule.native : rule.hf, key, &index)) {
        hit = &rule;
        break;
      }
    }
    if (hit) {
      out.add(key, substitute(to_hf ? hit->hf : hit->native, index),
              relayout_tensor(tensor, hit->relayout, to_hf, layout, key));
    } else if (to_hf && key == "output.tied_module.weight") {
      out.ignore(key, "duplicate of tok_embeddings.weight (weight tying)");
    } else if (to_hf && starts_with(key, "rope_embeddings.")) {
      out.ignore(key, kRopeBuffer);
    } else if (!to_hf && (ends_with(key, "rotary_emb.inv_freq") || starts_with(key, kTimm + "rope."))) {
      out.ignore(key, kRopeBuffer);
    } else if (!to_hf && (starts_with(key, kTimm + "attn_pool.") || starts_with(key, kTimm + "head.") ||
                          starts_with(key, kTimm + "fc_norm."))) {
      out.ignore(key, "timm head PLM does not build (pool_type none, no projection)");
    } else {
      out.ignore(key, kUnknown);
    }
  }
  return out.take();
}

// The native rule whose name `key` has, among rules whose native name starts with `scope` (nullptr if none);
// `index` receives the layer/block index when there is one.
const Rule* native_rule(const std::string& key, std::string_view scope, std::string* index) {
  for (const Rule& rule : rules()) {
    if (starts_with(rule.native, scope) && match(rule.native, key, index)) return &rule;
  }
  return nullptr;
}

}  // namespace

at::Tensor interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads, int64_t head_dim) {
  return permute_rows(w, n_heads, head_dim, true);
}

at::Tensor rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads, int64_t head_dim) {
  return permute_rows(w, n_heads, head_dim, false);
}

MappedTensors hf_to_native(const NamedTensors& hf, const DecoderLayout& layout) {
  return map_with_table(hf, layout, false);
}

MappedTensors native_to_hf(const NamedTensors& native, const DecoderLayout& layout) {
  return map_with_table(native, layout, true);
}

MappedTensors pe_checkpoint_to_native(const NamedTensors& pe, int64_t layers, bool use_ln_post) {
  // PLM's load_ckpt: k.replace("module.", ""), then, if any key starts with "visual.", keep keys containing
  // "visual" and k.replace("visual.", "") (both replace every occurrence, not only a prefix).
  NamedTensors stripped;
  stripped.reserve(pe.size());
  for (const auto& [key, tensor] : pe) stripped.emplace_back(replace_all(key, "module.", ""), tensor);
  const bool has_visual =
      std::any_of(stripped.begin(), stripped.end(), [](const auto& e) { return starts_with(e.first, "visual."); });

  Output out;
  std::string index;
  for (size_t i = 0; i < pe.size(); ++i) {
    const std::string& original = pe[i].first;
    std::string key = stripped[i].first;
    if (has_visual) {
      if (key.find("visual") == std::string::npos) {
        out.ignore(original, "not part of the vision tower (the checkpoint has visual.* keys)");
        continue;
      }
      key = replace_all(key, "visual.", "");
    }
    const std::string native = "vision_model." + key;
    if (starts_with(key, "attn_pool.")) {
      out.ignore(original, "attention pooler: PLM uses pool_type none");
    } else if (key == "proj") {
      out.ignore(original, "projection: PLM builds the encoder with output_dim None");
    } else if (starts_with(key, "ln_post.") && !use_ln_post) {
      out.ignore(original, "ln_post: PLM builds the encoder with use_ln_post false");
    } else if (!native_rule(native, "vision_model.", &index)) {
      out.ignore(original, "not a parameter of PLM's vision encoder");
    } else if (starts_with(key, "transformer.resblocks.") && std::stoll(index) >= layers) {
      out.ignore(original, "block " + index + " is beyond layers = " + std::to_string(layers) +
                               " (PLM uses the first " + std::to_string(layers) + " blocks)");
    } else {
      out.add(original, native, pe[i].second);
    }
  }
  return out.take();
}

at::Tensor interpolate_pos_embed(const at::Tensor& pos_embed, int64_t old_grid, int64_t new_grid_h, int64_t new_grid_w,
                                 bool has_cls) {
  return model::resample_position_embedding(pos_embed, old_grid, new_grid_h, new_grid_w, has_cls);
}

MappedTensors meta_llama_to_native(const NamedTensors& meta, bool weight_tying) {
  Output out;
  std::string index;
  for (const auto& [key, tensor] : meta) {
    if (key == "rope.freqs") {
      out.ignore(key, kRopeBuffer);
    } else if (weight_tying && key == "output.weight") {
      out.ignore(key, kTied);
    } else if (starts_with(key, "vision_") || !native_rule(key, "", &index)) {
      out.ignore(key, "not a decoder parameter");
    } else {
      out.add(key, key, tensor);
    }
  }
  return out.take();
}

}  // namespace plm::ckpt
