#include "plm/text/sample_tokens.h"

namespace plm::text {

SampleTokens tokenize_dialog(const Tokenizer& tokenizer, const std::vector<DialogRound>& dialog, int64_t seq_len,
                             TokenId image_token_id) {
  SampleTokens s;
  for (const DialogRound& round : dialog) {
    for (const bool is_answer : {false, true}) {
      const auto part = tokenizer.encode(is_answer ? round.assistant : round.user);
      if (static_cast<int64_t>(s.ids.size() + part.size()) + 1 > seq_len) {
        if (s.ids.empty()) {
          s.rejected = "its first turn (" + std::to_string(part.size()) +
                       " tokens, image tokens included) does not fit in max_seqlen " + std::to_string(seq_len) + ".";
          s.ids.clear();
          return s;
        }
        s.truncated = true;
        break;
      }
      if (is_answer)
        for (size_t k = 0; k < part.size(); ++k) s.response_pos.push_back(static_cast<int64_t>(s.ids.size() + k));
      s.ids.insert(s.ids.end(), part.begin(), part.end());
    }
    if (s.truncated) break;
  }
  for (size_t i = 0; i < s.ids.size(); ++i)
    if (s.ids[i] == image_token_id) s.image_pos.push_back(static_cast<int64_t>(i));
  return s;
}

}  // namespace plm::text
