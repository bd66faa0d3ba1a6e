#include "plm/infer/prompt.h"

#include <filesystem>

#include "plm/config/load.h"
#include "plm/infer/infer_error.h"
#include "plm/text/conversation.h"

namespace plm::infer {
namespace fs = std::filesystem;

config::TrainArgs checkpoint_train_args(const std::string& ckpt_path) {
  const fs::path dir = fs::is_directory(ckpt_path) ? fs::path(ckpt_path) : fs::path(ckpt_path).parent_path();
  config::Source source;
  const fs::path params = dir / "params.json";
  if (fs::exists(params)) {
    // JSON is YAML: the config loader types the data section (the model section is loaded by ckpt/).
    const YAML::Node root = config::load_yaml_file(params.string());
    if (root["data"]) {
      source.root["data"] = root["data"];
      source.origin["data"] = params.string();
    }
  }
  return config::load_source(std::move(source)).args;
}

CheckpointSettings read_checkpoint_settings(const std::string& ckpt_path, const config::ModelArgs& model) {
  const fs::path dir = fs::is_directory(ckpt_path) ? fs::path(ckpt_path) : fs::path(ckpt_path).parent_path();
  config::TrainArgs args = checkpoint_train_args(ckpt_path);
  args.model = model;
  CheckpointSettings out;
  out.preprocess = data::PreprocessOptions::from(args);
  out.preprocess.conversation_format = "plm_sft";  // generate.py always uses the plmchat default
  if (args.data.tokenizer_path) {
    const fs::path p(*args.data.tokenizer_path);
    out.tokenizer_path = fs::exists(p) ? p.string() : (dir / p).string();
  } else if (fs::exists(dir / "tokenizer.model")) {
    out.tokenizer_path = (dir / "tokenizer.model").string();
  }
  return out;
}

PromptEncoder::PromptEncoder(std::shared_ptr<const text::Tokenizer> tokenizer, data::PreprocessOptions options)
    : preprocessor_(std::move(tokenizer), std::move(options)) {}

data::SampleMedia PromptEncoder::load_media(const Prompt& prompt) const {
  if (!prompt.images.empty() && prompt.video)
    throw GenerateError("bad_prompt", "a prompt takes images or a video, not both (video '" + *prompt.video + "').");
  data::Sample sample;
  sample.images = prompt.images;
  sample.video = prompt.video;
  return preprocessor_.load_media(sample, "");
}

PreparedPrompt PromptEncoder::encode(const std::string& question, const data::SampleMedia& media) const {
  // Text only: no placeholder image at inference (docs/reference.md 8), unlike training.
  const at::Tensor pixels = media.type == text::MediaType::text ? at::Tensor() : media.pixels;
  const int64_t chunks = pixels.defined() ? pixels.size(0) : 0;
  const std::string prompt = text::generation_prompt(text::ConversationFormat::named(options().conversation_format),
                                                     question, chunks, options().tokens_per_chunk());
  return {tokenizer().encode(prompt), pixels};
}

}  // namespace plm::infer
