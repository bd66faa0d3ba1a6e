// `plm export --hf|--plm|--peft OUT_DIR CKPT` (docs/export.md).
#include <iostream>

#include "cli/commands.h"
#include "plm/export/export.h"

namespace plm::cli {
namespace {

struct ExportArgs {
  std::string ckpt, hf, plm, peft;
  double max_shard_gb = 5.0;
  exporting::ExportOptions options;
};

int run_export(const ExportArgs& a) {
  exporting::ExportOptions o = a.options;
  o.max_shard_bytes = static_cast<uint64_t>(a.max_shard_gb * 1e9);
  const auto files = !a.hf.empty()     ? exporting::export_hf(a.ckpt, a.hf, o)
                     : !a.peft.empty() ? exporting::export_peft(a.ckpt, a.peft, o)
                                       : exporting::export_plm(a.ckpt, a.plm, o);
  for (const auto& f : files) std::cout << f << '\n';
  return 0;
}

}  // namespace

void add_export_command(CLI::App& app, int& exit_code) {
  static ExportArgs a;
  auto* cmd =
      app.add_subcommand("export", "Write a checkpoint as a Hugging Face folder (--hf) or a PLM release (--plm)");
  auto* hf = cmd->add_option("--hf", a.hf, "Hugging Face PerceptionLM folder to write (transformers' from_pretrained)");
  auto* plm = cmd->add_option("--plm", a.plm, "PLM release folder to write (consolidated.pth + params.json)");
  auto* peft = cmd->add_option("--peft", a.peft, "PEFT LoRA adapter folder to write (for the base's --hf export)");
  hf->excludes(plm)->excludes(peft);
  plm->excludes(hf)->excludes(peft);
  peft->excludes(hf)->excludes(plm);
  cmd->add_option("ckpt", a.ckpt, "checkpoint: a step folder, consolidated folder, HF folder or weights file")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--tokenizer", a.options.tokenizer, "tokenizer file to ship (default: the checkpoint's)");
  cmd->add_option("--dtype", a.options.dtype, "weights' dtype (default: as stored)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_flag("--merge-lora", a.options.merge_lora,
                "--plm: fold a LoRA run's adapters into the base weights (--hf always does)");
  cmd->add_option("--max-shard-size", a.max_shard_gb, "largest HF safetensors shard, in GB (default 5)")
      ->check(CLI::PositiveNumber);
  cmd->callback([&exit_code] {
    if (a.hf.empty() && a.plm.empty() && a.peft.empty()) {
      std::cerr << "plm export: give --hf OUT_DIR, --plm OUT_DIR or --peft OUT_DIR.\n";
      exit_code = 2;
      return;
    }
    exit_code = report_errors([] { return run_export(a); });
  });
}

}  // namespace plm::cli
