#include <iostream>

#include "cli/commands.h"
#include "plm/common/log.h"
#include "plm/config/emit.h"
#include "plm/config/load.h"
#include "plm/config/validate.h"

namespace plm::cli {
namespace {

struct ConfigOptions {
  std::string recipe;
  std::vector<std::string> overrides;
};

void report_ignored(const config::Loaded& loaded) {
  if (loaded.ignored.empty()) return;
  std::string list;
  for (const auto& i : loaded.ignored) list += "\n  " + i;
  log::warn("config keys accepted for PLM compatibility but not used by this build:{}", list);
}

int print(const ConfigOptions& o) {
  const auto loaded = config::load_config(o.recipe, o.overrides);
  report_ignored(loaded);
  for (const auto& e : config::validate(loaded)) log::warn("{}", e);
  std::cout << config::to_yaml(loaded.args);
  return 0;
}

int validate(const ConfigOptions& o) {
  const auto loaded = config::load_config(o.recipe, o.overrides);
  report_ignored(loaded);
  const auto errors = config::validate(loaded);
  for (const auto& e : errors) std::cerr << e << "\n";
  if (!errors.empty()) return 2;
  std::cout << o.recipe << ": valid\n";
  return 0;
}

}  // namespace

void add_config_command(CLI::App& app, int& exit_code) {
  auto* config = app.add_subcommand("config", "Inspect a recipe: the resolved configuration and its errors");
  config->require_subcommand(1);
  auto options = std::make_shared<ConfigOptions>();

  auto* print_cmd = config->add_subcommand(
      "print", "Print the resolved config (defaults <- recipe and its includes <- overrides) as YAML");
  add_recipe_arguments(print_cmd, options->recipe, options->overrides);
  print_cmd->callback([options, &exit_code] { exit_code = report_errors([&] { return print(*options); }); });

  auto* validate_cmd =
      config->add_subcommand("validate", "Check a recipe; exit 0 if valid, else print every error and exit 2");
  add_recipe_arguments(validate_cmd, options->recipe, options->overrides);
  validate_cmd->callback([options, &exit_code] { exit_code = report_errors([&] { return validate(*options); }); });
}

}  // namespace plm::cli
