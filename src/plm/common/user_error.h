// The root of every error a user can cause: a bad config key or value, a missing, unreadable or corrupt file, a
// checkpoint written for another model, a launcher environment that does not add up. Its message is one sentence
// naming the file, line or key and what to do; the CLI prints it and exits with status 2 (cli/commands.h
// report_errors). Internal invariants are TORCH_CHECKs (c10::Error) instead, and a rank that fails mid-run is a
// dist::DistError.
#pragma once

#include <stdexcept>

namespace plm {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace plm
