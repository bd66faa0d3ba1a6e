#include "plm/ckpt/model_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "plm/ckpt/checkpoint_store.h"
#include "plm/ckpt/hf_config.h"
#include "plm/ckpt/lora_base.h"
#include "plm/ckpt/safetensors.h"
#include "plm/ckpt/sharded.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/config/load.h"
#include "plm/model/init.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace plm::ckpt {
namespace {

fs::path folder_of(const std::string& path) {
  return fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
}

DecoderLayout layout_of(const config::ModelArgs& args) {
  const auto d = model::decoder_dims(args);
  return {d.n_heads, d.n_kv_heads, d.head_dim, args.weight_tying};
}

// Whole-file tensors, native or HF names alike.
NamedTensors read_file(const fs::path& p) {
  const TensorMap m =
      p.extension() == ".safetensors" ? read_safetensors(p.string()) : load_torch_state_dict(p.string());
  return NamedTensors(m.begin(), m.end());
}

bool has_hf_names(const NamedTensors& t) {
  for (const auto& [name, tensor] : t)
    if (name.rfind("model.language_model.", 0) == 0 || name.rfind("model.vision_tower.", 0) == 0) return true;
  return false;
}

}  // namespace

namespace {

// A training step folder is read only once its manifest vouches for it, as the trainer's resume does: weights only
// (CheckpointStore::verify), once per folder and process (read_model_args and read_native_weights both ask).
void verify_if_step_folder(const std::string& path) {
  static std::mutex mutex;
  static std::set<std::string> verified;
  if (!CheckpointStore::is_step_folder(path)) return;
  std::error_code ec;
  const std::string key = fs::weakly_canonical(path, ec).string();
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (verified.count(key)) return;
  }
  CheckpointStore::verify(path, /*weights_only=*/true);
  const std::lock_guard<std::mutex> lock(mutex);
  verified.insert(key);
}

}  // namespace

config::ModelArgs read_model_args(const std::string& path) {
  const fs::path dir = folder_of(path);
  verify_if_step_folder(dir.string());
  if (fs::exists(dir / "params.json")) {
    const fs::path file = dir / "params.json";
    // JSON is YAML: reuse the config loader (types, unknown keys) on the model section only.
    YAML::Node root;
    try {
      root = config::load_yaml_file(file.string());  // bounded as a recipe is
    } catch (const config::ConfigError& e) {
      throw CheckpointError(std::string(e.what()) + " (the checkpoint's params.json)");
    }
    config::Source source;
    source.root["model"] = root["model"] ? root["model"] : root;
    source.origin["model"] = file.string();
    return config::load_source(std::move(source)).args.model;
  }
  if (fs::exists(dir / "config.json"))
    return model_args_from_hf_config(read_text((dir / "config.json").string()), (dir / "config.json").string());
  throw CheckpointError("no params.json (PLM) or config.json (Hugging Face) in '" + dir.string() +
                        "': cannot tell the model's configuration.");
}

MappedTensors read_native_weights(const std::string& path, const config::ModelArgs& args) {
  NamedTensors raw;
  const fs::path p(path);
  verify_if_step_folder(p.string());
  if (const auto base = read_lora_base(p.string())) {  // a LoRA run's step: its base's weights, then the adapters
    if (!fs::exists(base->path))
      throw CheckpointError("'" + (p / kLoraBaseFile).string() + "' names the base checkpoint '" + base->path +
                            "', which does not exist: these LoRA adapters need it (put it back there, or write its "
                            "new path into lora_base.json).");
    MappedTensors out = read_native_weights(base->path, args);
    const std::string now = lora_base_checksum(out.tensors);
    if (now != base->checksum)
      throw CheckpointError("'" + path + "' holds LoRA adapters trained on '" + base->path + "' (weights " +
                            base->checksum + "), but that checkpoint's weights are now " + now +
                            ": it is not the base they were trained on.");
    const TensorMap adapters = is_sharded_checkpoint(p.string()) ? unflatten(p.string())  // a full_shard run's
                                                                 : read_safetensors((p / "model.safetensors").string());
    for (const auto& [name, t] : adapters) out.tensors.emplace_back(name, t);
    return out;
  }
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors") || fs::exists(p / "model.safetensors.index.json")) {
      const TensorMap m = read_safetensors_dir(p.string());
      raw.assign(m.begin(), m.end());
    } else if (fs::exists(p / "consolidated.safetensors")) {
      raw = read_file(p / "consolidated.safetensors");
    } else if (is_sharded_checkpoint(p.string())) {  // a full_shard run's step folder: its shards, unflattened
      const TensorMap m = unflatten(p.string());
      raw.assign(m.begin(), m.end());
    } else if (fs::exists(p / "consolidated.pth")) {
      raw = read_file(p / "consolidated.pth");
    } else {  // Meta-style parts, merged by name as PLM's load_consolidated_checkpoint does
      std::vector<fs::path> parts;
      for (const auto& e : fs::directory_iterator(p)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("consolidated.", 0) == 0 && e.path().extension() == ".pth") parts.push_back(e.path());
      }
      if (parts.empty())
        throw CheckpointError("'" + p.string() +
                              "' has no model.safetensors, consolidated.safetensors, consolidated.pth "
                              "or consolidated.NN.pth: no weights to load.");
      std::sort(parts.begin(), parts.end());
      for (const auto& part : parts) {
        const NamedTensors t = read_file(part);
        raw.insert(raw.end(), t.begin(), t.end());
      }
    }
  } else {
    if (!fs::exists(p)) throw CheckpointError("checkpoint '" + path + "' does not exist.");
    raw = read_file(p);
  }
  if (has_hf_names(raw)) return hf_to_native(raw, layout_of(args));
  MappedTensors out;
  for (auto& [name, tensor] : raw) {
    if (name == "output.tied_module.weight" || (args.weight_tying && name == "output.weight"))
      out.ignored.push_back({name, "duplicate of tok_embeddings.weight (tied output)"});
    else if (name.rfind("rope_embeddings.", 0) == 0 || name == "rope.freqs")
      out.ignored.push_back({name, "RoPE buffer, recomputed from the config"});
    else
      out.tensors.emplace_back(name, tensor);
  }
  return out;
}

std::string LoadReport::problems(size_t limit) const {
  std::string out;
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    out += (out.empty() ? "" : "; ") + std::to_string(names.size()) + " " + what + ": ";
    for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
    if (names.size() > limit) out += ", ...";
  };
  list("missing", missing);
  list("mis-shaped", mismatched);
  list("unexpected", unexpected);
  return out;
}

LoadReport load_weights(model::PerceptionLMImpl& model, const MappedTensors& weights, bool strict,
                        const std::string& origin) {
  LoadReport r;
  r.ignored = weights.ignored;
  auto params = model.named_parameters();
  std::map<std::string, const at::Tensor*> given;
  for (const auto& [name, tensor] : weights.tensors) given[name] = &tensor;
  at::NoGradGuard no_grad;
  for (auto& p : params) {
    const auto it = given.find(p.key());
    if (it == given.end()) {
      r.missing.push_back(p.key());
      continue;
    }
    const at::Tensor& src = *it->second;
    if (src.sizes() != p.value().sizes()) {
      std::ostringstream s;
      s << p.key() << ": checkpoint " << src.sizes() << " vs model " << p.value().sizes();
      r.mismatched.push_back(s.str());
    } else {
      p.value().copy_(src);
      r.loaded.push_back(p.key());
    }
    given.erase(it);
  }
  for (const auto& [name, tensor] : given) r.unexpected.push_back(name);
  if (strict && (!r.missing.empty() || !r.mismatched.empty() || !r.unexpected.empty()))
    throw CheckpointError("checkpoint '" + origin + "' does not fit the model: " + r.problems() + ".");
  return r;
}

namespace {

/// The config key that most likely differs when parameter `name` has another shape in a checkpoint.
std::string likely_key(const std::string& name) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  if (has("tok_embeddings") || name.rfind("output.", 0) == 0) return "model.vocab_size or model.dim";
  if (name.rfind("vision_projector.", 0) == 0) return "model.dim or model.vision_model.width";
  if (name.rfind("vision_model.", 0) == 0) {
    if (has("positional_embedding")) return "model.vision_model.image_size or patch_size";
    if (has("conv1")) return "model.vision_model.patch_size or width";
    if (has("mlp")) return "model.vision_model.width or mlp_ratio";
    return "model.vision_model.width";
  }
  if (has("feed_forward")) return "model.dim, ffn_dim_multiplier or multiple_of";
  if (has("attention.")) return "model.dim, n_heads or n_kv_heads";
  return "model.dim";
}

/// load_weights, then a CheckpointError for any tensor the checkpoint has in another shape, naming each with the
/// config key that likely differs: a stage start must not train such a tensor from random. The reference raises on
/// size mismatches too; missing tensors stay a warning, as there (LayerScale at stage 2).
LoadReport load_for_start(model::PerceptionLMImpl& model, const MappedTensors& weights, const std::string& key,
                          const std::string& origin) {
  const LoadReport r = load_weights(model, weights, false, origin);
  if (r.mismatched.empty()) return r;
  std::string list;
  for (size_t i = 0; i < r.mismatched.size() && i < 4; ++i) {
    const std::string& m = r.mismatched[i];  // "name: checkpoint [..] vs model [..]"
    list += (i ? "; " : "") + m + " (" + likely_key(m.substr(0, m.find(':'))) + "?)";
  }
  if (r.mismatched.size() > 4) list += "; and " + std::to_string(r.mismatched.size() - 4) + " more";
  throw CheckpointError(key + " '" + origin + "' was written for another model configuration: " + list +
                        ". Set the recipe's model keys to the checkpoint's (its params.json or config.json).");
}

}  // namespace

LoadReport init_from_checkpoints(model::PerceptionLMImpl& model, const config::CheckpointArgs& checkpoint) {
  model::init_all(model);
  LoadReport total;
  auto merge = [&total](const LoadReport& r) {
    total.loaded.insert(total.loaded.end(), r.loaded.begin(), r.loaded.end());
    total.unexpected.insert(total.unexpected.end(), r.unexpected.begin(), r.unexpected.end());
    total.mismatched.insert(total.mismatched.end(), r.mismatched.begin(), r.mismatched.end());
    total.ignored.insert(total.ignored.end(), r.ignored.begin(), r.ignored.end());
  };
  std::set<std::string> loaded;
  if (checkpoint.vision_model_path && model.vision_model) {
    const auto& v = model.vision_model->args;
    const NamedTensors raw = read_file(*checkpoint.vision_model_path);
    MappedTensors pe = pe_checkpoint_to_native(raw, v.layers, v.use_ln_post);
    for (auto& [name, tensor] : pe.tensors) {
      if (name != "vision_model.positional_embedding") continue;
      const int64_t cls = v.use_cls_token ? 1 : 0, want = v.image_size / v.patch_size;
      const auto old_grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tensor.size(0) - cls))));
      if (old_grid != want && old_grid * old_grid + cls == tensor.size(0))
        tensor = interpolate_pos_embed(tensor.to(at::kFloat), old_grid, want, cls == 1);
    }
    const LoadReport r = load_for_start(model, pe, "checkpoint.vision_model_path", *checkpoint.vision_model_path);
    merge(r);
    loaded.insert(r.loaded.begin(), r.loaded.end());
  }
  if (checkpoint.init_ckpt_path) {
    const LoadReport r = load_for_start(model, read_native_weights(*checkpoint.init_ckpt_path, model.args),
                                        "checkpoint.init_ckpt_path", *checkpoint.init_ckpt_path);
    merge(r);
    loaded.insert(r.loaded.begin(), r.loaded.end());
  }
  for (const auto& p : model.named_parameters())
    if (!loaded.count(p.key())) total.missing.push_back(p.key());
  return total;
}

model::PerceptionLM load_model(const std::string& path, LoadReport* report) {
  const config::ModelArgs args = read_model_args(path);
  model::PerceptionLM m(args);
  const LoadReport r = load_weights(*m, read_native_weights(path, args), /*strict=*/true, path);
  if (report) *report = r;
  return m;
}

}  // namespace plm::ckpt
