#include "plm/text/tokenizer.h"

#include <fstream>

#include "plm/text/sentencepiece_tokenizer.h"
#include "plm/text/tiktoken_bpe.h"

namespace plm::text {

std::string repair_utf8(std::string_view text) {
  // Fast path: validate; most text is valid.
  auto valid_at = [&](size_t i, size_t& len) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (b0 < 0x80) return len = 1, true;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF)
      len = 2;
    else if (b0 >= 0xE0 && b0 <= 0xEF)
      len = 3, lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    else if (b0 >= 0xF0 && b0 <= 0xF4)
      len = 4, lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    else
      return len = 1, false;
    // Maximal subpart: count how many continuation bytes are acceptable before failing.
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= text.size()) return len = k, false;
      const auto b = static_cast<unsigned char>(text[i + k]);
      const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) return len = k, false;
    }
    return true;
  };
  size_t i = 0, len = 0;
  while (i < text.size() && valid_at(i, len)) i += len;
  if (i == text.size()) return std::string(text);
  std::string out(text.substr(0, i));
  while (i < text.size()) {
    if (valid_at(i, len)) {
      out.append(text.substr(i, len));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
    }
    i += len;
  }
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError("cannot read tokenizer file '" + path + "'.");
  std::string first;
  std::getline(in, first);
  // A tiktoken file starts with "base64 rank"; a sentencepiece model is a binary protobuf.
  const auto space = first.find(' ');
  const bool tiktoken =
      space != std::string::npos && space > 0 &&
      first.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == space &&
      first.find_first_not_of("0123456789\r", space + 1) == std::string::npos;
  if (tiktoken) return std::make_unique<TiktokenBpe>(path);
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace plm::text
