#include "plm/text/tiktoken_bpe.h"

#include <array>
#include <fstream>
#include <limits>
#include <queue>
#include <sstream>
#include <tuple>

namespace plm::text {

const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> plm_special_tokens() {
  std::vector<std::string> s = {"<|begin_of_text|>",
                                "<|end_of_text|>",
                                "<|image|>",
                                "<|reserved_special_token_1|>",
                                "<|reserved_special_token_2|>",
                                "<|reserved_special_token_3|>",
                                "<|start_header_id|>",
                                "<|end_header_id|>",
                                "<|reserved_special_token_4|>",
                                "<|eot_id|>"};
  for (int i = 5; i < 256 - 5; ++i) s.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
  return s;
}

namespace {

constexpr TokenId kNoRank = std::numeric_limits<TokenId>::max();

bool base64_decode(std::string_view in, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  if (in.empty() || in.size() % 4 != 0) return false;
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '=') {
      if (i + 2 < in.size() || (i + 1 < in.size() && in[i + 1] != '=')) return false;
      break;
    }
    const int v = table[static_cast<unsigned char>(c)];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return true;
}

// Python's str.isspace(), for PLM's cutting of pathological inputs.
bool python_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the code point at text[i] (valid UTF-8) and advances i.
char32_t next_code_point(std::string_view text, size_t& i) {
  const auto b = static_cast<unsigned char>(text[i]);
  const int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  char32_t c = len == 1 ? b : b & (0xFF >> (len + 1));
  for (int k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  i += len;
  return c;
}

// PLM's Llama3Tokenizer.encode cuts the text into 4,000,000-character blocks and each block into slices with
// no run of more than 250,000 whitespace or non-whitespace characters; each slice is encoded on its own.
std::vector<std::string_view> plm_slices(std::string_view text) {
  constexpr size_t kBlockChars = 4'000'000, kMaxRun = 250'000;
  if (text.size() <= kMaxRun) return {text};  // fewer bytes than the smallest cut: nothing to do
  std::vector<std::string_view> slices;
  size_t i = 0;
  while (i < text.size()) {
    const size_t block_start = i;
    size_t chars = 0, run = 0, slice_start = i;
    bool run_is_space = false;
    while (i < text.size() && chars < kBlockChars) {
      const size_t at = i;
      const bool space = python_isspace(next_code_point(text, i));
      if (chars == 0) run_is_space = space;
      ++chars;
      if (space != run_is_space) {
        run = 1;
        run_is_space = space;
      } else if (++run > kMaxRun) {
        slices.push_back(text.substr(slice_start, at - slice_start));
        slice_start = at;
        run = 1;
      }
    }
    slices.push_back(text.substr(slice_start, i - slice_start));
    (void)block_start;
  }
  return slices;
}

}  // namespace

TiktokenBpe::TiktokenBpe(const std::string& path, std::vector<std::string> special_tokens, const std::string& pattern)
    : pattern_(pattern), pretokenizer_(pattern) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError("cannot read tokenizer file '" + path + "'.");
  std::vector<std::pair<std::string, TokenId>> entries;
  std::string line, bytes;
  size_t line_no = 0, total = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto space = line.find(' ');
    TokenId rank = -1;
    const bool ok = space != std::string::npos && base64_decode(std::string_view(line).substr(0, space), bytes) &&
                    (std::istringstream(line.substr(space + 1)) >> rank) && rank >= 0;
    if (!ok)
      throw TokenizerError(path + ":" + std::to_string(line_no) + ": not a tiktoken BPE entry 'base64(bytes) rank'.");
    entries.emplace_back(bytes, rank);
    total += bytes.size();
  }
  num_base_ = static_cast<TokenId>(entries.size());
  for (const auto& [b, r] : entries)
    if (r >= num_base_)
      throw TokenizerError(path + ": rank " + std::to_string(r) + " is not below the number of entries (" +
                           std::to_string(num_base_) + "); ranks must be the ids 0..n-1.");
  for (const auto& s : special_tokens) total += s.size();
  arena_.reserve(total);  // string_views below point into arena_: it must never reallocate
  tokens_.assign(num_base_ + special_tokens.size(), {});
  for (const auto& [b, r] : entries) {
    const size_t at = arena_.size();
    arena_ += b;
    tokens_[r] = std::string_view(arena_).substr(at, b.size());
    if (!ranks_.emplace(tokens_[r], r).second)
      throw TokenizerError(path + ": the same token bytes appear twice (rank " + std::to_string(r) + ").");
  }
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    const size_t at = arena_.size();
    arena_ += special_tokens[i];
    const auto id = static_cast<TokenId>(num_base_ + i);
    tokens_[id] = std::string_view(arena_).substr(at, special_tokens[i].size());
    specials_.emplace(tokens_[id], id);
  }
}

TokenId TiktokenBpe::special_id(std::string_view literal) const {
  const auto it = specials_.find(literal);
  return it == specials_.end() ? -1 : it->second;
}

TokenId TiktokenBpe::rank_of(std::string_view bytes) const {
  const auto it = ranks_.find(bytes);
  return it == ranks_.end() ? kNoRank : it->second;
}

// tiktoken's byte_pair_merge: repeatedly merge the adjacent pair whose concatenation has the lowest rank (ties:
// leftmost). Parts form a linked list over byte offsets (part i spans [i, next[i])). Short pieces scan for the
// minimum, as tiktoken does; long ones (whitespace runs, minified data) keep candidate merges in a heap and skip
// stale entries, O(n log n) instead of O(n^2), choosing the same merge at every step.
void TiktokenBpe::encode_piece(std::string_view piece, std::vector<TokenId>& out) const {
  if (const TokenId whole = rank_of(piece); whole != kNoRank) {
    out.push_back(whole);
    return;
  }
  constexpr size_t kShort = 64;
  const size_t n = piece.size();
  thread_local std::vector<uint32_t> next_buf, prev_buf;
  thread_local std::vector<TokenId> rank_buf;
  next_buf.resize(n), prev_buf.resize(n), rank_buf.resize(n);
  uint32_t* next = next_buf.data();
  uint32_t* prev = prev_buf.data();
  TokenId* rank = rank_buf.data();  // rank[i]: part i merged with the part after it
  for (size_t i = 0; i < n; ++i) next[i] = static_cast<uint32_t>(i + 1), prev[i] = static_cast<uint32_t>(i - 1);
  auto span_rank = [&](size_t i) { return next[i] >= n ? kNoRank : rank_of(piece.substr(i, next[next[i]] - i)); };
  auto merge = [&](size_t i) {  // part i absorbs the part after it, which dies (next = 0)
    const uint32_t j = next[i];
    next[i] = next[j];
    if (next[i] < n) prev[next[i]] = static_cast<uint32_t>(i);
    next[j] = 0;
  };
  for (size_t i = 0; i < n; ++i) rank[i] = span_rank(i);
  if (n < kShort) {
    while (true) {
      TokenId best_rank = kNoRank;
      size_t best = 0;
      for (size_t i = 0; i < n; i = next[i])
        if (rank[i] < best_rank) best_rank = rank[i], best = i;
      if (best_rank == kNoRank) break;
      merge(best);
      rank[best] = span_rank(best);
      if (best > 0) rank[prev[best]] = span_rank(prev[best]);
    }
  } else {
    using Candidate = std::tuple<TokenId, uint32_t, uint32_t>;  // rank, part start, end of the merged span
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](size_t i) {
      if (const TokenId r = span_rank(i); r != kNoRank) heap.emplace(r, i, next[next[i]]);
    };
    for (size_t i = 0; i + 1 < n; ++i)
      if (rank[i] != kNoRank) heap.emplace(rank[i], i, next[next[i]]);
    while (!heap.empty()) {
      const auto [r, i, end] = heap.top();
      heap.pop();
      // Stale unless part i is alive and still spans, with its successor, exactly [i, end).
      if ((i != 0 && next[i] == 0) || next[i] >= n || next[next[i]] != end) continue;
      merge(i);
      if (i > 0) push(prev[i]);
      if (next[i] < n) push(i);
    }
  }
  for (size_t i = 0; i < n; i = next[i]) {
    const TokenId r = rank_of(piece.substr(i, next[i] - i));
    if (r == kNoRank) throw TokenizerError("tokenizer vocabulary lacks a single-byte token; the file is incomplete.");
    out.push_back(r);
  }
}

void TiktokenBpe::encode_ordinary(std::string_view text, std::vector<TokenId>& out) const {
  pretokenizer_.split(text, [&](std::string_view piece) { encode_piece(piece, out); });
}

std::vector<TokenId> TiktokenBpe::encode(std::string_view raw) const {
  const std::string repaired = repair_utf8(raw);
  std::vector<TokenId> out;
  out.reserve(repaired.size() / 3 + 4);
  for (const std::string_view slice : plm_slices(repaired)) {
    // Special-token literals all look like "<|...|>": find each "<|" and look up the text up to the next "|>".
    size_t done = 0, at = 0;
    while ((at = slice.find("<|", at)) != std::string_view::npos) {
      const size_t close = slice.find("|>", at + 2);
      if (close == std::string_view::npos) break;
      const TokenId id = special_id(slice.substr(at, close + 2 - at));
      if (id < 0) {
        ++at;
        continue;
      }
      encode_ordinary(slice.substr(done, at - done), out);
      out.push_back(id);
      done = at = close + 2;
    }
    encode_ordinary(slice.substr(done), out);
  }
  return out;
}

std::string TiktokenBpe::decode(const std::vector<TokenId>& ids) const {
  std::string out;
  for (const TokenId id : ids) {
    if (id < 0 || id >= vocab_size())
      throw TokenizerError("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                           std::to_string(vocab_size() - 1) + ").");
    out += tokens_[id];
  }
  return out;
}

}  // namespace plm::text
