// Tokenising a dialog for training: per-round encoding, truncation between rounds, loss positions
// (docs/reference.md 3.3, apps/plm/tokenizer.py PLMTokenizer.__call__).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plm/text/conversation.h"
#include "plm/text/tokenizer.h"

namespace plm::text {

/// A tokenised sample. `response_pos` are the indices of the assistant tokens (header, answer, <|eot_id|> and,
/// on the last round, <|end_of_text|>; warmup: the caption and "\n"): the targets that get loss.
struct SampleTokens {
  std::vector<TokenId> ids;
  std::vector<int64_t> response_pos;
  std::vector<int64_t> image_pos;  // indices whose id is the image token
  bool truncated = false;          // later rounds were dropped to fit seq_len
  std::string rejected;            // non-empty: the sample cannot be used, and why
};

/// Encodes each round's user text and assistant text separately (no merges across them) and concatenates them.
/// A part is kept only while (length so far + part + 1) <= seq_len; from the first part that does not fit,
/// it and everything after are dropped. If the very first part (the user turn carrying all image tokens) does
/// not fit, the sample is rejected.
SampleTokens tokenize_dialog(const Tokenizer& tokenizer, const std::vector<DialogRound>& dialog, int64_t seq_len,
                             TokenId image_token_id);

}  // namespace plm::text
