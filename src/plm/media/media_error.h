// The error for media a sample refers to that cannot be used: missing, unreadable, undecodable, or of a kind plm
// does not decode. The data pipeline skips such a sample and counts it under reason(); strict mode makes it fatal.
#pragma once

#include "plm/common/reasoned_error.h"

namespace plm::media {

/// Reasons: "missing_file", "decode_error", "unsupported_format", "empty_video", ...
struct MediaError : ReasonedError {
  using ReasonedError::ReasonedError;
};

}  // namespace plm::media
