// The error for a demo dataset that cannot be written (unwritable folder, FFmpeg without the MPEG-4 encoder,
// failed tokenizer training); what() is one sentence naming the path.
#pragma once

#include <stdexcept>
#include <string>

#include "plm/common/user_error.h"

namespace plm::demo {

struct DemoError : UserError {
  explicit DemoError(const std::string& what) : UserError(what) {}
};

}  // namespace plm::demo
