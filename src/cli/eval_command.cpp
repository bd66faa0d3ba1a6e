// `plm eval`: benchmark scores (and optionally the validation loss) of a checkpoint on JSONL samples
// (docs/reference.md 9: PLM-VideoBench and the usual image and video QA answer types). Answers are greedy; the decoding
// settings go into the results JSON.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/data/registry.h"
#include "plm/eval/evaluate.h"
#include "plm/eval/validation.h"
#include "plm/infer/infer_error.h"
#include "plm/infer/load.h"

namespace plm::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct EvalCliOptions {
  std::string ckpt, tokenizer, registry, datamix, media_root, out, predictions, dtype, device = "auto";
  std::vector<std::string> data;
  int64_t max_samples = 0, max_gen_len = 128;
  eval::EvalOptions eval;
  bool loss = false;
};

/// The datasets to evaluate: each --data file (media relative to its folder or --media-root), then the
/// --datamix entries of --registry (their root_dir or --media-root).
std::vector<eval::EvalDataset> datasets(const EvalCliOptions& o) {
  std::vector<eval::EvalDataset> out;
  for (const auto& path : o.data)
    out.push_back({fs::path(path).stem().string(), path,
                   o.media_root.empty() ? fs::path(path).parent_path().string() : o.media_root});
  if (!o.datamix.empty()) {
    const std::string registry = o.registry.empty() ? "configs/datasets.yaml" : o.registry;
    for (const auto& m : data::resolve_datamix(o.datamix, data::load_registry(registry), registry))
      out.push_back({m.dataset.name, m.dataset.annotation, o.media_root.empty() ? m.dataset.root_dir : o.media_root});
  } else if (!o.registry.empty()) {
    throw infer::GenerateError("bad_option", "--registry needs --datamix naming the datasets to evaluate.");
  }
  if (out.empty())
    throw infer::GenerateError("bad_option", "plm eval needs --data FILE.jsonl or --datamix (with --registry).");
  return out;
}

/// The validation loss over the same datasets, one weight each, batch_size rows per batch, as many batches as
/// the evaluated samples fill.
eval::ValidationLoss loss_on(model::PerceptionLM& model, std::shared_ptr<const text::Tokenizer> tokenizer,
                             const data::PreprocessOptions& preprocess, const std::vector<eval::EvalDataset>& sets,
                             int64_t samples, int64_t batch_size) {
  data::LoaderFactory p;
  p.tokenizer = tokenizer;
  p.preprocess = std::make_shared<data::Preprocessor>(tokenizer, preprocess);
  for (const auto& d : sets)
    p.mix.push_back({{d.name, d.annotation, d.root_dir}, 1.0 / static_cast<double>(sets.size())});
  p.options.batch_size = batch_size;
  if (const text::TokenId eos = tokenizer->special_id("<|end_of_text|>"); eos >= 0) p.options.pad_id = eos;
  const int64_t batches = std::max<int64_t>(1, (samples + batch_size - 1) / batch_size);
  return eval::validation_loss(*model, p, batches);
}

int run_eval(const EvalCliOptions& o) {
  runtime::configure_threads();
  const std::vector<eval::EvalDataset> sets = datasets(o);
  std::vector<eval::EvalSample> samples;
  for (const auto& d : sets) {
    std::vector<eval::EvalSample> part = eval::read_eval_samples(d, o.max_samples);
    std::move(part.begin(), part.end(), std::back_inserter(samples));
  }
  const infer::LoadedCheckpoint loaded = infer::load_for_inference(o.ckpt, o.tokenizer, o.device, o.dtype);
  model::PerceptionLM model = loaded.model;
  const infer::CheckpointSettings& settings = loaded.settings;
  const std::shared_ptr<const text::Tokenizer> tokenizer = loaded.tokenizer;
  const std::string& tokenizer_path = loaded.tokenizer_path;
  const bool cuda = loaded.cuda;
  const std::string& dtype = loaded.dtype;
  infer::GenerateOptions generate;
  generate.max_gen_len = o.max_gen_len;
  infer::Generator generator(model, infer::PromptEncoder(tokenizer, settings.preprocess), generate);
  const data::Preprocessor media(tokenizer, settings.preprocess);
  log::info("evaluating {} samples from {} dataset(s) on {} in {} (greedy, max_gen_len {}, batch {}, mcq {})",
            samples.size(), sets.size(), cuda ? "cuda" : "cpu", dtype, o.max_gen_len, o.eval.batch_size,
            o.eval.mcq_scoring);

  const eval::EvalReport report = eval::evaluate(generator, media, samples, o.eval);
  std::cout << eval::results_table(report.results);
  std::cout << fmt::format("evaluated {} samples in {:.2f} s: {:.2f} samples/s ({} generated tokens)\n",
                           report.predictions.size(), report.seconds, report.samples_per_s(), report.generated_tokens);

  json results = json::parse(eval::results_json(report.results));
  if (o.loss) {
    const eval::ValidationLoss v =
        loss_on(model, tokenizer, settings.preprocess, sets, static_cast<int64_t>(samples.size()), o.eval.batch_size);
    std::cout << fmt::format("validation loss {:.4f} over {} loss tokens ({} batches, {:.2f} s)\n", v.loss, v.tokens,
                             v.batches, v.seconds);
    for (const auto& [name, l] : v.dataset_loss) std::cout << fmt::format("  {:<28} {:.4f}\n", name, l);
    results["validation_loss"] = json::parse(v.to_json());
  }
  results["eval_settings"] = {{"ckpt", o.ckpt},
                              {"tokenizer", tokenizer_path},
                              {"decoding", "greedy"},
                              {"max_gen_len", o.max_gen_len},
                              {"batch_size", o.eval.batch_size},
                              {"mcq_scoring", o.eval.mcq_scoring},
                              {"dtype", dtype},
                              {"max_video_frames", settings.preprocess.max_video_frames},
                              {"max_num_tiles", settings.preprocess.max_num_tiles},
                              {"vision_input_type", settings.preprocess.vision_input_type},
                              {"samples", report.predictions.size()},
                              {"samples_per_s", report.samples_per_s()}};
  if (!o.out.empty()) {
    std::ofstream(o.out) << results.dump(2) << '\n';
    log::info("wrote {}", o.out);
    for (const auto& [task, records] : report.judge) {
      const fs::path path = fs::path(o.out).replace_extension("").string() + "." + task + ".judge.jsonl";
      std::ofstream out(path);
      eval::write_judge_records(out, task, records);
      log::info("wrote the {} answers for the LLM judge to {}", task, path.string());
    }
  } else if (!report.judge.empty()) {
    log::warn("judge tasks need --out: their answers for the LLM judge are written beside it");
  }
  if (!o.predictions.empty()) {
    std::ofstream out(o.predictions);
    for (const auto& p : report.predictions) out << eval::prediction_line(p) << '\n';
    log::info("wrote {} predictions to {}", report.predictions.size(), o.predictions);
  }
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<EvalCliOptions>();
  auto* cmd = app.add_subcommand("eval", "Score a checkpoint on benchmark JSONL samples (and the validation loss)");
  add_checkpoint_arguments(cmd, o->ckpt, o->tokenizer);
  cmd->add_option("--data", o->data, "samples to evaluate (.jsonl); repeatable; media relative to its folder")
      ->check(CLI::ExistingFile);
  cmd->add_option("--registry", o->registry, "dataset registry for --datamix (default configs/datasets.yaml)");
  cmd->add_option("--datamix", o->datamix, "registry datasets to evaluate, name:weight,... (weights unused)");
  cmd->add_option("--media-root", o->media_root, "folder the samples' media paths are relative to")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--max-samples", o->max_samples, "first N samples of each dataset (default: all)");
  cmd->add_option("--batch-size", o->eval.batch_size, "prompts per generation batch (default 8)");
  cmd->add_option("--max-gen-len", o->max_gen_len, "new tokens per answer at most (default 128)");
  cmd->add_option("--mcq-scoring", o->eval.mcq_scoring,
                  "generate (read the answer's letter, default) or loglik (likeliest option letter)")
      ->check(CLI::IsMember({"generate", "loglik"}));
  cmd->add_flag("--loss", o->loss, "also compute the validation loss on the same datasets");
  cmd->add_option("--out", o->out, "results JSON (judge tasks also write OUT.<task>.judge.jsonl)");
  cmd->add_option("--predictions", o->predictions, "one JSON line per sample with its prediction and score");
  cmd->add_option("--dtype", o->dtype, "parameter dtype (default fp32 on CPU, bf16 on CUDA)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--device", o->device, "auto (CUDA if present), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([o, &exit_code] { exit_code = report_errors([&] { return run_eval(*o); }); });
}

}  // namespace plm::cli
