// libFuzzer harness: Llama 3's tokenizer (tests/fixtures/llama3/tokenizer.model): encode any bytes, decode the
// ids back, and decode the input read as ids. Anything but a TokenizerError is a finding; so is an encode/decode
// round trip that changes valid UTF-8 text.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "plm/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<plm::text::Tokenizer> tok =
      plm::text::load_tokenizer(std::string(PLM_SOURCE_DIR) + "/tests/fixtures/llama3/tokenizer.model");
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto ids = tok->encode(text);
    const std::string back = tok->decode(ids);
    if (plm::text::repair_utf8(text) == text && back != text) std::abort();  // a lossy round trip
    std::vector<plm::text::TokenId> raw(size / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
    (void)tok->decode(raw);
  } catch (const plm::text::TokenizerError&) {
  }
  return 0;
}
