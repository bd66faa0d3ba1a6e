// plm: train, fine-tune and run Perception Language Models from YAML recipes.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"

#ifndef PLM_VERSION
#define PLM_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
  // GNU OpenMP spins idle threads by default; next to the data loader's threads on a busy CPU that made training
  // 5-8x slower (2.8 vs 24.7 samples/s for the tiny model on 2 shared cores). libgomp reads the policy once, when it
  // loads, so set it and start again. A user's own OMP_WAIT_POLICY is kept.
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run with the default policy
  }
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
  plm::cli::add_export_command(app, exit_code);
  plm::cli::add_launch_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  plm::log::flush();
  return exit_code;
}
