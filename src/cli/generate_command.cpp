// `plm generate`: answers questions about an image, several images, a video or nothing with a checkpoint
// (docs/reference.md 8; PLM's apps/plm/generate.py). Several --question flags run as one batch, each with the same
// media.
#include <iostream>

#include "cli/commands.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/safetensors.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/infer/generate.h"
#include "plm/infer/infer_error.h"
#include "plm/infer/load.h"

namespace plm::cli {
namespace {

struct GenerateCliOptions {
  std::string ckpt, tokenizer, media_type, dtype, device = "auto", dump_inputs;
  std::vector<std::string> questions, media_paths;
  infer::GenerateOptions generate;
  std::optional<int64_t> max_num_tiles, max_video_frames;
  bool print_ids = false;
};

std::string joined(const std::vector<text::TokenId>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) (line += i ? " " : "") += std::to_string(ids[i]);
  return line;
}

infer::Prompt media_prompt(const GenerateCliOptions& o) {
  const std::string type = o.media_type.empty() ? (o.media_paths.empty() ? "none" : "image") : o.media_type;
  infer::Prompt p;
  if (type == "none") {
    if (!o.media_paths.empty()) throw infer::GenerateError("bad_option", "--media-type none takes no --media-path.");
  } else if (o.media_paths.empty()) {
    throw infer::GenerateError("bad_option", "--media-type " + type + " needs a --media-path.");
  } else if (type == "video") {
    if (o.media_paths.size() > 1)
      throw infer::GenerateError("bad_option", "--media-type video takes one --media-path.");
    p.video = o.media_paths.front();
  } else {
    p.images = o.media_paths;
  }
  return p;
}

void dump_inputs(const std::vector<infer::PreparedPrompt>& prompts, const text::Tokenizer& tok,
                 const std::string& path) {
  const infer::PromptBatch batch = infer::make_batch(prompts, std::max(tok.special_id("<|end_of_text|>"), 0));
  ckpt::TensorMap out;
  out.insert("input_ids", batch.tokens);
  out.insert("prompt_lengths", batch.lengths);
  if (batch.pixels.defined()) out.insert("pixel_values", batch.pixels.contiguous());
  ckpt::write_safetensors(out, path);
  log::info("wrote the model inputs to {}", path);
}

int run_generate(const GenerateCliOptions& o) {
  runtime::configure_threads();
  o.generate.check();
  if (o.generate.sampling.top_p && o.generate.sampling.top_k)
    log::warn("--top-k is ignored when --top-p is given (PLM samples with top-p first)");
  infer::LoadedCheckpoint loaded = infer::load_for_inference(o.ckpt, o.tokenizer, o.device, o.dtype);
  model::PerceptionLM model = loaded.model;
  infer::CheckpointSettings& settings = loaded.settings;
  if (o.max_num_tiles) settings.preprocess.max_num_tiles = *o.max_num_tiles;
  if (o.max_video_frames) settings.preprocess.max_video_frames = *o.max_video_frames;
  const std::shared_ptr<const text::Tokenizer> tokenizer = loaded.tokenizer;
  const bool cuda = loaded.cuda;
  const std::string dtype = loaded.dtype;
  infer::Generator generator(model, infer::PromptEncoder(tokenizer, settings.preprocess), o.generate);

  // One media load shared by every question of the batch.
  const infer::Prompt media = media_prompt(o);
  const data::SampleMedia pixels = generator.prompts().load_media(media);
  std::vector<infer::PreparedPrompt> prompts;
  for (const auto& q : o.questions) prompts.push_back(generator.prompts().encode(q, pixels));
  if (!o.dump_inputs.empty()) dump_inputs(prompts, *tokenizer, o.dump_inputs);
  log::info("generating for {} prompt(s) on {} in {} (max_gen_len {}, temperature {})", prompts.size(),
            cuda ? "cuda" : "cpu", dtype, o.generate.max_gen_len, o.generate.sampling.temperature);

  const infer::GenerateResult result = generator.generate(prompts);
  for (size_t i = 0; i < result.generations.size(); ++i) {
    const auto& g = result.generations[i];
    std::cout << "==== prompt " << i + 1 << ": " << o.questions[i] << "\n" << g.text << "\n";
    std::cout << "[" << g.ids.size() << " tokens, stop: " << infer::to_string(g.stop) << "]\n";
    if (o.print_ids) {
      std::cout << "prompt ids: " << joined(g.prompt_ids) << "\n";
      std::cout << "generated ids: " << joined(g.ids) << "\n";
    }
  }
  const auto& t = result.timing;
  std::cout << "generated " << t.generated_tokens << " tokens for " << result.generations.size() << " prompt(s) in "
            << fmt::format("{:.2f}", t.prefill_s + t.decode_s) << " s: " << fmt::format("{:.2f}", t.tokens_per_s())
            << " tokens/s (prefill of " << t.prompt_tokens << " tokens " << fmt::format("{:.2f}", t.prefill_s)
            << " s; decode " << fmt::format("{:.2f}", t.decode_tokens_per_s()) << " tokens/s)\n";
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<GenerateCliOptions>();
  auto* cmd = app.add_subcommand("generate", "Answer questions about an image, images, a video or text");
  add_checkpoint_arguments(cmd, o->ckpt, o->tokenizer);
  cmd->add_option("--question", o->questions, "the question; repeat it for a batch (all share the media)")->required();
  cmd->add_option("--media-type", o->media_type, "image (default with --media-path), video or none")
      ->check(CLI::IsMember({"image", "video", "none"}));
  cmd->add_option("--media-path", o->media_paths, "image or video file; repeat for several images")
      ->check(CLI::ExistingFile);
  cmd->add_option("--max-gen-len", o->generate.max_gen_len, "new tokens per prompt at most (default 256)");
  cmd->add_option("--temperature", o->generate.sampling.temperature, "0 = greedy (default)");
  cmd->add_option("--top-p", o->generate.sampling.top_p, "nucleus sampling mass (with --temperature > 0)");
  cmd->add_option("--top-k", o->generate.sampling.top_k, "sample among the k most likely (if no --top-p)");
  cmd->add_option("--seed", o->generate.seed, "sampling seed (default 0)");
  cmd->add_option("--until", o->generate.until, "stop string; repeatable");
  cmd->add_option("--max-num-tiles", o->max_num_tiles, "image tiles at most (default: params.json)");
  cmd->add_option("--max-video-frames", o->max_video_frames, "video frames (default: params.json)");
  cmd->add_option("--dtype", o->dtype, "parameter dtype (default fp32 on CPU, bf16 on CUDA)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--device", o->device, "auto (CUDA if present), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_flag("--print-ids", o->print_ids, "also print the prompt's and the generation's token ids");
  cmd->add_option("--dump-inputs", o->dump_inputs,
                  "write input_ids [B,L] (right-padded with <|end_of_text|>), prompt_lengths and pixel_values to "
                  "this safetensors file");
  cmd->callback([o, &exit_code] { exit_code = report_errors([&] { return run_generate(*o); }); });
}

}  // namespace plm::cli
