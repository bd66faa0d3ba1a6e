// The regex pre-tokenizer of tiktoken, on PCRE2 (UTF, Unicode properties, JIT).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace plm::text {

/// Splits text into the successive leftmost matches of a pattern, as tiktoken's find_iter does.
/// `\s`/`\S` are rewritten to Unicode White_Space (what the Rust regex crate means by \s) so that the
/// split does not depend on PCRE2's version. Thread-safe.
class Pretokenizer {
 public:
  explicit Pretokenizer(const std::string& pattern);
  ~Pretokenizer();
  Pretokenizer(Pretokenizer&&) noexcept;
  Pretokenizer& operator=(Pretokenizer&&) noexcept;

  /// Calls `piece` for each match, in order. `text` must be valid UTF-8 (see repair_utf8).
  void split(std::string_view text, const std::function<void(std::string_view)>& piece) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace plm::text
