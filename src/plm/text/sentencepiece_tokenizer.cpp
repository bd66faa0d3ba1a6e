#include "plm/text/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

namespace plm::text {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = sp_->Load(path);
  if (!status.ok())
    throw TokenizerError("'" + path + "' is neither a tiktoken BPE file nor a sentencepiece model (" +
                         status.ToString() + ").");
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<TokenId> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(repair_utf8(text), &ids);
  if (!status.ok()) throw TokenizerError("sentencepiece encode failed: " + status.ToString());
  return {ids.begin(), ids.end()};
}

std::string SentencePieceTokenizer::decode(const std::vector<TokenId>& ids) const {
  for (const TokenId id : ids)
    if (id < 0 || id >= vocab_size())
      throw TokenizerError("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                           std::to_string(vocab_size() - 1) + ").");
  std::string out;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  if (!status.ok()) throw TokenizerError("sentencepiece decode failed: " + status.ToString());
  return out;
}

TokenId SentencePieceTokenizer::vocab_size() const {
  return sp_->GetPieceSize();
}

TokenId SentencePieceTokenizer::special_id(std::string_view literal) const {
  const int id = sp_->PieceToId(std::string(literal));
  return sp_->IdToPiece(id) == literal ? id : -1;
}

}  // namespace plm::text
