// Byte-level BPE in tiktoken's format and semantics: Llama 3's tokenizer.model (docs/reference.md 3.1).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "plm/text/pretokenizer.h"
#include "plm/text/tokenizer.h"

namespace plm::text {

/// The Llama 3 pre-tokenizer pattern (tiktoken's pat_str for Llama 3 and PLM).
extern const char* const kLlama3Pattern;

/// PLM's 256 special tokens, in id order after the base vocabulary: <|begin_of_text|>, <|end_of_text|>,
/// <|image|>, reserved 1..3, <|start_header_id|>, <|end_header_id|>, reserved 4, <|eot_id|>, reserved 5..250.
std::vector<std::string> plm_special_tokens();

/// tiktoken BPE: split the text on special-token literals, split each ordinary span with the pre-tokenizer
/// regex, then merge each piece's bytes pairwise, lowest rank first (ties: leftmost). Identical ids to
/// tiktoken.Encoding(pat_str, mergeable_ranks, special_tokens).encode(text, allowed_special="all"), including
/// PLM's cutting of huge inputs (4,000,000-character blocks, whitespace/non-whitespace runs of at most 250,000).
class TiktokenBpe final : public Tokenizer {
 public:
  /// Reads `path` ("base64(token bytes) rank" per line; rank = id). Specials get ids from the number of base
  /// tokens on. Throws TokenizerError naming the file and line of the first malformed entry.
  /// Memory: at most 16 bytes per byte of the file plus a constant (measured 11.5x to 12.5x on three-byte tokens,
  /// the shortest lines a file of that many tokens can have; tests/tooling/parser_memory.py checks it).
  TiktokenBpe(const std::string& path, std::vector<std::string> special_tokens = plm_special_tokens(),
              const std::string& pattern = kLlama3Pattern);

  /// Memory: at most 16 bytes per byte of text plus a constant (the ids, the UTF-8 repair, the pre-tokenizer's
  /// pieces and one piece's merge state; measured up to 12.2x, CJK text).
  std::vector<TokenId> encode(std::string_view text) const override;
  std::string decode(const std::vector<TokenId>& ids) const override;
  TokenId vocab_size() const override { return static_cast<TokenId>(tokens_.size()); }
  TokenId special_id(std::string_view literal) const override;

  /// Encodes text that contains no special tokens (literals are ordinary text here).
  void encode_ordinary(std::string_view text, std::vector<TokenId>& out) const;

  /// The bytes of token `id` (a special token: its literal); ids 0..num_base_tokens()-1 are the mergeable ranks.
  std::string_view token_bytes(TokenId id) const { return tokens_.at(static_cast<size_t>(id)); }
  TokenId num_base_tokens() const { return num_base_; }
  /// The rank of mergeable `bytes`, or a value above every rank if they are not a token.
  TokenId rank_of(std::string_view bytes) const;
  /// The pre-tokenizer's regular expression as given.
  const std::string& pattern() const { return pattern_; }

 private:
  void encode_piece(std::string_view piece, std::vector<TokenId>& out) const;

  std::string arena_;                                    // all token bytes, back to back
  std::vector<std::string_view> tokens_;                 // id -> bytes (specials: their literal)
  std::unordered_map<std::string_view, TokenId> ranks_;  // mergeable bytes -> rank
  std::unordered_map<std::string_view, TokenId> specials_;
  TokenId num_base_ = 0;
  std::string pattern_;
  Pretokenizer pretokenizer_;
};

}  // namespace plm::text
