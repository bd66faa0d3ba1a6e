// plm: train, fine-tune and run Perception Language Models from YAML recipes.
#include <iostream>

#include "cli/commands.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"

#ifndef PLM_VERSION
#define PLM_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
  CLI::App app("plm " PLM_VERSION ": train and fine-tune Perception Language Models from YAML recipes", "plm");
  app.set_version_flag("--version", [] {
    return "plm " PLM_VERSION "\nLibTorch " + plm::runtime::torch_version() + "\nCUDA " +
           (plm::runtime::cuda_compiled() ? "compiled in" : "not compiled in (CPU build)");
  });
  app.require_subcommand(1);
  int exit_code = 0;
  plm::cli::add_config_command(app, exit_code);
  plm::cli::add_text_command(app, exit_code);
  plm::cli::add_model_command(app, exit_code);
  plm::cli::add_data_command(app, exit_code);
  plm::cli::add_train_command(app, exit_code);
  plm::cli::add_generate_command(app, exit_code);
  plm::cli::add_eval_command(app, exit_code);
  plm::cli::add_launch_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  plm::log::flush();
  return exit_code;
}
