// placeholder: being written this session
#include "cli/commands.h"
namespace plm::cli {
void add_generate_command(CLI::App&, int&) {}
}  // namespace plm::cli
