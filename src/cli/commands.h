// The `plm` subcommands. Each add_* registers one subcommand on the root app; its callback runs the
// command and stores the process exit code in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace plm::cli {

/// `plm config print|validate RECIPE [key=value ...]`.
void add_config_command(CLI::App& app, int& exit_code);

/// `plm text encode|decode --tokenizer PATH [--jsonl]`.
void add_text_command(CLI::App& app, int& exit_code);

}  // namespace plm::cli
