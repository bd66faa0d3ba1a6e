// The tokenizer interface and its factory. Two implementations: the Llama 3 tiktoken-format BPE
// (tiktoken_bpe.h) and sentencepiece models (sentencepiece_tokenizer.h).
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "plm/common/user_error.h"

namespace plm::text {

using TokenId = int32_t;

/// A user-visible tokenizer problem (unreadable or malformed file, id out of range); one sentence.
struct TokenizerError : UserError {
  explicit TokenizerError(const std::string& what) : UserError(what) {}
};

/// Text <-> token ids. Implementations are immutable after construction and safe to share between threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Encodes UTF-8 text. Special-token literals in the text (e.g. "<|image|>") become their special ids, as PLM
  /// encodes with allowed_special="all"; no BOS/EOS is added (PLM's chat templates write them as literals).
  /// Invalid UTF-8 is first repaired by replacing each invalid sequence with U+FFFD, as Python's
  /// bytes.decode(errors="replace") does.
  virtual std::vector<TokenId> encode(std::string_view text) const = 0;

  /// Concatenates the tokens' bytes; special tokens render as their literal strings. Throws TokenizerError for an
  /// id outside [0, vocab_size()). The result can end in a partial UTF-8 sequence when the ids do.
  virtual std::string decode(const std::vector<TokenId>& ids) const = 0;

  /// Number of ids, specials included (128256 for Llama 3).
  virtual TokenId vocab_size() const = 0;

  /// The id of a special-token literal such as "<|eot_id|>", or -1 if this tokenizer has no such token.
  virtual TokenId special_id(std::string_view literal) const = 0;
};

/// Loads a tokenizer file, recognising the format by content: a tiktoken BPE file (lines "base64 rank") or a
/// sentencepiece model (binary protobuf). Throws TokenizerError naming the file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

/// Replaces every invalid UTF-8 sequence of `text` with U+FFFD (maximal-subpart rule, as CPython and the
/// Unicode standard recommend). Returns `text` unchanged when it is valid.
std::string repair_utf8(std::string_view text);

}  // namespace plm::text
