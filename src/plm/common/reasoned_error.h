// An error that a data problem causes (a user error, common/user_error.h), with a short stable reason key for
// counting skipped samples.
#pragma once

#include <stdexcept>
#include <string>

#include "plm/common/user_error.h"

namespace plm {

struct ReasonedError : UserError {
  /// `reason`: a short stable key ("missing_file", "bad_json", ...); `what`: one sentence naming the file.
  ReasonedError(std::string reason, const std::string& what) : UserError(what), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

}  // namespace plm
