#include "plm/export/export.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "plm/ckpt/hf_config.h"
#include "plm/ckpt/lora_base.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/safetensors.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/config/emit.h"
#include "plm/export/hf_tokenizer.h"
#include "plm/infer/prompt.h"
#include "plm/model/decoder.h"
#include "plm/model/lora.h"
#include "plm/text/tiktoken_bpe.h"
#include "plm/text/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace plm::exporting {
namespace {

using ckpt::CheckpointError;

void write_file(const fs::path& path, const std::string& text) {
  ckpt::detail::AtomicFile f(path.string());
  f.write(text.data(), text.size());
  f.commit();
}

void make_folder(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError("cannot create '" + dir + "': " + ec.message() + ".");
}

at::ScalarType dtype_of(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp16") return at::kHalf;
  throw CheckpointError("unknown export dtype '" + name + "' (fp32, bf16 or fp16).");
}

std::string hf_dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

// The checkpoint's model: its configuration, its parameters under native names (checked against the model's own
// parameters, strictly), floating tensors in the export dtype.
struct Source {
  config::ModelArgs args;
  ckpt::TensorMap weights;
  at::ScalarType dtype = at::kFloat;
  infer::CheckpointSettings settings;
};

Source read_source(const std::string& ckpt_path, const ExportOptions& o, bool merge_lora) {
  Source s;
  s.args = ckpt::read_model_args(ckpt_path);
  s.settings = infer::read_checkpoint_settings(ckpt_path, s.args);
  if (!o.tokenizer.empty()) s.settings.tokenizer_path = o.tokenizer;
  ckpt::MappedTensors native = ckpt::read_native_weights(ckpt_path, s.args);
  // Strict against the model's parameters (a meta model: shapes without memory), so an export never lacks a tensor.
  model::PerceptionLM shape(s.args, at::TensorOptions().device(at::kMeta));
  ckpt::load_weights(*shape, native, /*strict=*/true, ckpt_path);
  if (s.args.lora && merge_lora) {
    native.tensors = model::merge_lora(native.tensors, s.args.lora->alpha / static_cast<double>(s.args.lora->rank));
    s.args.lora.reset();
  }
  bool first = true;
  for (auto& [name, t] : native.tensors) {
    if (first && t.is_floating_point()) s.dtype = t.scalar_type(), first = false;
    if (!o.dtype.empty() && t.is_floating_point()) t = t.to(dtype_of(o.dtype));
    s.weights.insert(name, t);
  }
  if (!o.dtype.empty()) s.dtype = dtype_of(o.dtype);
  return s;
}

void copy_tokenizer(const std::string& from, const fs::path& to) {
  if (fs::exists(to) && fs::equivalent(from, to)) return;
  write_file(to, ckpt::read_text(from));
}

ckpt::HfTokenIds token_ids(const text::Tokenizer& tok) {
  ckpt::HfTokenIds ids;
  auto id_of = [&](const char* literal, int64_t fallback) {
    const auto id = tok.special_id(literal);
    return id >= 0 ? int64_t{id} : fallback;
  };
  ids.image = id_of("<|image|>", ids.image);
  ids.video = id_of("<|video|>", ids.video < tok.vocab_size() ? ids.video : ids.image);
  ids.bos = id_of("<|begin_of_text|>", ids.bos);
  ids.eos = {id_of("<|end_of_text|>", 128001), id_of("<|eot_id|>", 128009)};
  return ids;
}

// transformers' PerceptionLM image / video processors and processor, set to what this checkpoint was trained with.
std::vector<std::string> write_processor(const fs::path& dir, const data::PreprocessOptions& p) {
  const json mean = {0.5, 0.5, 0.5};  // PLM normalises (x/255 - 0.5)/0.5
  // What the image and video processors share: resize to the tile (bicubic), rescale, normalise, RGB.
  const json common = {{"processor_class", "PerceptionLMProcessor"},
                       {"size", {{"height", p.image_res}, {"width", p.image_res}}},
                       {"resample", 3},
                       {"do_resize", true},
                       {"do_rescale", true},
                       {"rescale_factor", 1.0 / 255.0},
                       {"do_normalize", true},
                       {"image_mean", mean},
                       {"image_std", mean},
                       {"do_convert_rgb", true}};
  json image = common, video = common;
  image.update({{"image_processor_type", "PerceptionLMImageProcessor"},
                {"tile_size", p.image_res},
                {"max_num_tiles", p.max_num_tiles},
                {"vision_input_type", p.vision_input_type}});
  video.update({{"video_processor_type", "PerceptionLMVideoProcessor"}, {"num_frames", p.max_video_frames}});
  const json processor = {
      {"processor_class", "PerceptionLMProcessor"}, {"patch_size", p.patch_size}, {"pooling_ratio", p.pooling_ratio}};
  std::vector<std::string> out;
  for (const auto& [name, j] : {std::pair<const char*, const json&>{"preprocessor_config.json", image},
                                {"video_preprocessor_config.json", video},
                                {"processor_config.json", processor}}) {
    write_file(dir / name, j.dump(2) + "\n");
    out.push_back((dir / name).string());
  }
  return out;
}

}  // namespace

std::vector<std::string> export_hf(const std::string& ckpt_path, const std::string& out_dir, const ExportOptions& o) {
  Source s = read_source(ckpt_path, o, /*merge_lora=*/true);
  make_folder(out_dir);
  const fs::path dir(out_dir);
  const model::DecoderDims d = model::decoder_dims(s.args);
  const ckpt::MappedTensors hf = ckpt::native_to_hf(NamedTensors(s.weights.begin(), s.weights.end()),
                                                    {d.n_heads, d.n_kv_heads, d.head_dim, s.args.weight_tying});
  ckpt::TensorMap tensors;
  for (const auto& [name, t] : hf.tensors) tensors.insert(name, t);
  std::vector<std::string> files = ckpt::write_safetensors_dir(tensors, out_dir, o.max_shard_bytes, {{"format", "pt"}});

  ckpt::HfTokenIds ids;
  std::unique_ptr<text::Tokenizer> tokenizer;
  if (!s.settings.tokenizer_path.empty()) {
    tokenizer = text::load_tokenizer(s.settings.tokenizer_path);
    ids = token_ids(*tokenizer);
  }
  write_file(dir / "config.json", ckpt::hf_config_json(s.args, hf_dtype_name(s.dtype), ids));
  files.push_back((dir / "config.json").string());
  write_file(dir / "generation_config.json", json{{"bos_token_id", ids.bos}, {"eos_token_id", ids.eos}}.dump(2) + "\n");
  files.push_back((dir / "generation_config.json").string());
  for (auto& f : write_processor(dir, s.settings.preprocess)) files.push_back(std::move(f));
  if (tokenizer) {
    copy_tokenizer(s.settings.tokenizer_path, dir / "tokenizer.model");
    files.push_back((dir / "tokenizer.model").string());
    if (const auto* bpe = dynamic_cast<const text::TiktokenBpe*>(tokenizer.get())) {  // Llama 3's: a fast tokenizer
      write_file(dir / "tokenizer.json", tokenizer_json(*bpe, "<|begin_of_text|>"));
      // PerceptionLMProcessor reads tokenizer.image_token / video_token: the literals of config.json's ids (PLM's
      // tokenizer has no video token, so frames' id is a reserved one, as in transformers' own conversion).
      const json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                           {"bos_token", "<|begin_of_text|>"},
                           {"eos_token", "<|eot_id|>"},
                           {"clean_up_tokenization_spaces", false},
                           {"model_input_names", {"input_ids", "attention_mask"}},
                           {"model_max_length", s.args.max_seqlen},
                           {"extra_special_tokens",
                            {{"image_token", std::string(bpe->token_bytes(static_cast<text::TokenId>(ids.image)))},
                             {"video_token", std::string(bpe->token_bytes(static_cast<text::TokenId>(ids.video)))}}}};
      write_file(dir / "tokenizer_config.json", config.dump(2) + "\n");
      files.push_back((dir / "tokenizer.json").string());
      files.push_back((dir / "tokenizer_config.json").string());
    }
  }
  return files;
}

std::vector<std::string> export_peft(const std::string& ckpt_path, const std::string& out_dir, const ExportOptions& o) {
  Source s = read_source(ckpt_path, o, /*merge_lora=*/false);
  if (!s.args.lora)
    throw CheckpointError("'" + ckpt_path +
                          "' has no LoRA adapters (its model.lora is null): nothing to export as PEFT.");
  make_folder(out_dir);
  const fs::path dir(out_dir);
  const model::DecoderDims d = model::decoder_dims(s.args);
  const ckpt::DecoderLayout layout{d.n_heads, d.n_kv_heads, d.head_dim, s.args.weight_tying};
  ckpt::TensorMap tensors;
  json targets = json::array();
  for (const auto& [name, t] : s.weights) {
    if (!model::is_lora_parameter(name) || name.find(".lora_B.") == std::string::npos) continue;
    // B's rows are the base weight's rows: mapped (and for q/k permuted) as that weight is; A's columns are inputs.
    const ckpt::MappedTensors hf = ckpt::native_to_hf({{model::lora_base_weight(name), t}}, layout);
    if (hf.tensors.size() != 1)
      throw CheckpointError("the LoRA tensor '" + name + "' adapts a weight with no Hugging Face name.");
    const std::string& weight = hf.tensors.front().first;
    const std::string module = weight.substr(0, weight.size() - std::string(".weight").size());
    const std::string a_name = name.substr(0, name.size() - std::string("lora_B.weight").size()) + "lora_A.weight";
    tensors.insert("base_model.model." + module + ".lora_A.weight", s.weights.at(a_name));
    tensors.insert("base_model.model." + module + ".lora_B.weight", hf.tensors.front().second);
    targets.push_back(module);
  }
  const config::LoraArgs& l = *s.args.lora;
  const auto base = ckpt::read_lora_base(ckpt_path);
  const json config = {{"peft_type", "LORA"},
                       {"task_type", nullptr},
                       {"r", l.rank},
                       {"lora_alpha", l.alpha},
                       {"lora_dropout", l.dropout},
                       {"target_modules", targets},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"init_lora_weights", true},
                       {"use_rslora", false},
                       {"use_dora", false},
                       {"modules_to_save", nullptr},
                       {"inference_mode", true},
                       {"base_model_name_or_path", base ? base->path : std::string()}};
  std::vector<std::string> files;
  ckpt::write_safetensors(tensors, (dir / "adapter_model.safetensors").string(), {{"format", "pt"}});
  files.push_back((dir / "adapter_model.safetensors").string());
  write_file(dir / "adapter_config.json", config.dump(2) + "\n");
  files.push_back((dir / "adapter_config.json").string());
  return files;
}

std::vector<std::string> export_plm(const std::string& ckpt_path, const std::string& out_dir, const ExportOptions& o) {
  Source s = read_source(ckpt_path, o, o.merge_lora);
  make_folder(out_dir);
  const fs::path dir(out_dir);
  ckpt::TensorMap tensors;
  for (const auto& [name, t] : s.weights) tensors.insert(name, t);
  if (s.args.weight_tying) tensors.insert("output.tied_module.weight", tensors.at("tok_embeddings.weight"));
  std::vector<std::string> files;
  ckpt::save_torch_state_dict(tensors, (dir / "consolidated.pth").string());
  files.push_back((dir / "consolidated.pth").string());

  // params.json as PLM writes it: the whole TrainArgs, with this checkpoint's model and data settings.
  config::TrainArgs args = infer::checkpoint_train_args(ckpt_path);
  args.model = s.args;
  if (!s.settings.tokenizer_path.empty()) {
    copy_tokenizer(s.settings.tokenizer_path, dir / "tokenizer.model");
    files.push_back((dir / "tokenizer.model").string());
    args.data.tokenizer_path = "tokenizer.model";
  }
  write_file(dir / "params.json", config::to_json(args));
  files.push_back((dir / "params.json").string());
  return files;
}

}  // namespace plm::exporting
