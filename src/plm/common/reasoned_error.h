// An error that a data problem causes, with a short stable reason key for counting skipped samples.
#pragma once

#include <stdexcept>
#include <string>

namespace plm {

struct ReasonedError : std::runtime_error {
  /// `reason`: a short stable key ("missing_file", "bad_json", ...); `what`: one sentence naming the file.
  ReasonedError(std::string reason, const std::string& what) : std::runtime_error(what), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

}  // namespace plm
