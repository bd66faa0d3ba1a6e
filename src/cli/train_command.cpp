// `plm train RECIPE [key=value ...]` and `plm consolidate STEP_DIR [--merge-lora OUT_DIR]`.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "plm/ckpt/checkpoint_store.h"
#include "plm/common/log.h"
#include "plm/config/validate.h"
#include "plm/dist/error_file.h"
#include "plm/export/export.h"
#include "plm/train/signals.h"
#include "plm/train/trainer.h"

namespace plm::cli {
namespace {

struct TrainOptions {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string step_dir;
  std::string merged_dir;  // consolidate --merge-lora
};

// PLM's preemption handling (docs/reference.md 7): SLURM's warning signal (sbatch --signal=USR2@120) makes rank 0
// requeue the job, which then resumes from the checkpoint just written. PLM_NO_REQUEUE=1 turns it off.
void requeue_if_preempted() {
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* rank = std::getenv("RANK") ? std::getenv("RANK") : std::getenv("SLURM_PROCID");
  if (train::stop_signal() != SIGUSR2 || !job || std::getenv("PLM_NO_REQUEUE") || (rank && std::string(rank) != "0"))
    return;
  const std::string command = "scontrol requeue " + std::string(job);
  log::info("requeueing SLURM job {}: {}", job, command);
  if (std::system(command.c_str()) != 0) log::warn("'{}' failed; the job was not requeued", command);
}

int train(const TrainOptions& o) {
  const config::Loaded loaded = config::load_config(o.recipe, o.overrides);
  const std::vector<std::string> problems = config::validate(loaded);
  if (!problems.empty()) {
    for (const auto& p : problems) std::cerr << p << '\n';
    dist::write_error_file({problems.front(), {}});
    return 2;
  }
  train::install_stop_signals();
  std::unique_ptr<train::Trainer> trainer;
  try {
    trainer = std::make_unique<train::Trainer>(loaded.args);
  } catch (const std::runtime_error& e) {  // config, checkpoint, tokenizer, and I/O (dump_dir, train.log) errors
    std::cerr << e.what() << '\n';
    dist::write_error_file({e.what(), {}});
    return 2;
  }
  try {
    const train::TrainOutcome out = trainer->run();
    if (out.stopped) {
      log::info("stopped by {} at step {}; resume with the same command", train::stop_signal() ? "a signal" : "request",
                out.step);
      requeue_if_preempted();
    } else
      log::info("finished at step {}; last checkpoint {}", out.step, out.checkpoint);
  } catch (const std::runtime_error& e) {
    report_failure(e);
    return 3;
  }
  log::flush();
  return 0;
}

int consolidate(const TrainOptions& o) {
  exporting::ExportOptions merge;
  merge.merge_lora = true;
  const auto paths =
      o.merged_dir.empty() ? ckpt::consolidate(o.step_dir) : exporting::export_plm(o.step_dir, o.merged_dir, merge);
  for (const auto& path : paths) std::cout << path << '\n';
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  static TrainOptions o;
  auto* cmd = app.add_subcommand("train", "Train a PLM stage from a recipe (resumes from dump_dir's checkpoints)");
  add_recipe_arguments(cmd, o.recipe, o.overrides);
  cmd->callback([&exit_code] { exit_code = report_errors([] { return train(o); }); });

  auto* cons = app.add_subcommand(
      "consolidate", "Write a checkpoint step folder as consolidated.safetensors + consolidated.pth (PLM's names)");
  cons->add_option("step_dir", o.step_dir, "checkpoints/<step> folder")->required()->check(CLI::ExistingDirectory);
  cons->add_option(
      "--merge-lora", o.merged_dir,
      "instead, write the model with a LoRA run's adapters folded into the base weights as a PLM release "
      "folder (consolidated.pth + params.json, model.lora: null; as plm export --plm DIR STEP --merge-lora)");
  cons->callback([&exit_code] { exit_code = report_errors([] { return consolidate(o); }); });
}

}  // namespace plm::cli
