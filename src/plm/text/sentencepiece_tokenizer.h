// sentencepiece models behind the Tokenizer interface (the demo trains one).
#pragma once

#include <memory>

#include "plm/text/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace plm::text {

/// A sentencepiece model. PLM's chat templates need their special tokens ("<|image|>", "<|eot_id|>", ...)
/// to be pieces of the model (train with --user_defined_symbols); those literals then encode to one id each.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  /// Throws TokenizerError naming the file when it is not a sentencepiece model.
  /// Memory: the sentencepiece library's, at most 32 bytes per byte of the model plus a constant (measured 13x for
  /// BPE and up to 20x for unigram models of ~140,000 one- to five-letter pieces; tests/tooling/parser_memory.py).
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<TokenId> encode(std::string_view text) const override;
  std::string decode(const std::vector<TokenId>& ids) const override;
  TokenId vocab_size() const override;
  TokenId special_id(std::string_view literal) const override;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace plm::text
