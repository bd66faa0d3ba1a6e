// libFuzzer harness: the recipe loader. The input is a YAML recipe (written to a file, as a user's would be)
// followed, after a line "---overrides---", by key=value overrides one per line; the config is loaded, validated
// and printed back. Anything but a ConfigError is a finding (crash, leak, hang, other exception).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "plm/config/emit.h"
#include "plm/config/load.h"
#include "plm/config/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/plm_fuzz_config_" + std::to_string(::getpid()) + ".yaml";
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string marker = "\n---overrides---\n";
  const size_t at = input.find(marker);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << input.substr(0, at);
  std::vector<std::string> overrides;
  if (at != std::string::npos) {
    std::istringstream lines(input.substr(at + marker.size()));
    for (std::string line; std::getline(lines, line) && overrides.size() < 64;) overrides.push_back(line);
  }
  try {
    const plm::config::Loaded loaded = plm::config::load_config(path, overrides);
    (void)plm::config::validate(loaded);
    (void)plm::config::to_yaml(loaded.args);
    (void)plm::config::to_json(loaded.args);
  } catch (const plm::config::ConfigError&) {
  }
  return 0;
}
