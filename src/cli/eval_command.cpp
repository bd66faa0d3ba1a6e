// placeholder: being written this session
#include "cli/commands.h"
namespace plm::cli {
void add_eval_command(CLI::App&, int&) {}
}  // namespace plm::cli
