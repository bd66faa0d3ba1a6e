#include "cli/commands.h"

namespace plm::cli {

void add_recipe_arguments(CLI::App* cmd, std::string& recipe, std::vector<std::string>& overrides) {
  cmd->add_option("recipe", recipe, "recipe YAML file")->required()->check(CLI::ExistingFile);
  cmd->add_option("overrides", overrides, "key.path=value overrides, applied in order");
}

void add_checkpoint_arguments(CLI::App* cmd, std::string& ckpt, std::string& tokenizer) {
  cmd->add_option("--ckpt", ckpt, "PLM folder/file or Hugging Face PerceptionLM folder")->required();
  cmd->add_option("--tokenizer", tokenizer,
                  "tokenizer file (default: params.json's data.tokenizer_path, else the checkpoint's tokenizer.model)");
}

}  // namespace plm::cli
