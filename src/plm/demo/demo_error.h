// The error for a demo dataset that cannot be written (unwritable folder, FFmpeg without the MPEG-4 encoder,
// failed tokenizer training); what() is one sentence naming the path.
#pragma once

#include <stdexcept>
#include <string>

namespace plm::demo {

struct DemoError : std::runtime_error {
  explicit DemoError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace plm::demo
