// The error a user can cause when generating or scoring: a bad option value, media the model cannot take, an
// empty prompt. One sentence naming the option or input.
#pragma once

#include "plm/common/reasoned_error.h"

namespace plm::infer {

/// Reasons: "bad_option", "bad_prompt", "no_vision_model", "no_tokenizer".
struct GenerateError : ReasonedError {
  using ReasonedError::ReasonedError;
};

}  // namespace plm::infer
