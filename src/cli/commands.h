// The `plm` subcommands. Each add_* registers one subcommand on the root app; its callback runs the
// command and stores the process exit code in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace plm::cli {

/// Runs a command; an error the user caused (a plm::UserError: bad config, tokenizer, checkpoint or media file,
/// inputs) or a value the model refuses is printed as its one-sentence message on stderr and gives exit code 2
/// instead of an abort.
int report_errors(const std::function<int()>& command);

/// A failure in the middle of a run (a DistError, an I/O error): logged (with the rank and time) and written to the
/// launcher's error file, with the silent ranks a DistError names (plm/dist/error_file.h).
void report_failure(const std::exception& e);

/// The positional `RECIPE [key=value ...]` of the commands that read a recipe: an existing YAML file, then
/// key.path=value overrides applied in order.
void add_recipe_arguments(CLI::App* cmd, std::string& recipe, std::vector<std::string>& overrides);

/// `--ckpt PATH` (required) and `--tokenizer PATH` (default: the checkpoint's) of the commands that run a
/// checkpoint.
void add_checkpoint_arguments(CLI::App* cmd, std::string& ckpt, std::string& tokenizer);

/// `plm config print|validate RECIPE [key=value ...]`.
void add_config_command(CLI::App& app, int& exit_code);

/// `plm text encode|decode --tokenizer PATH [--jsonl]`.
void add_text_command(CLI::App& app, int& exit_code);

/// `plm data check|preview RECIPE [key=value ...]`.
void add_data_command(CLI::App& app, int& exit_code);

/// `plm model info|forward`.
void add_model_command(CLI::App& app, int& exit_code);

/// `plm train RECIPE [key=value ...]` and `plm consolidate STEP_DIR`.
void add_train_command(CLI::App& app, int& exit_code);

/// `plm generate --ckpt PATH --question TEXT [...]`.
void add_generate_command(CLI::App& app, int& exit_code);

/// `plm eval ...`.
void add_eval_command(CLI::App& app, int& exit_code);

/// `plm export --hf|--plm OUT_DIR CKPT [--tokenizer PATH] [--dtype D] [--max-shard-size GB]`.
void add_export_command(CLI::App& app, int& exit_code);

/// `plm launch --nproc-per-node N [--master-port P] (RECIPE [k=v ...] | -- SUBCOMMAND ...)` and `plm dist check`.
void add_launch_command(CLI::App& app, int& exit_code);

}  // namespace plm::cli
