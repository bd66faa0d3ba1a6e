#include "plm/export/hf_tokenizer.h"

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

using nlohmann::ordered_json;

namespace plm::exporting {
namespace {

// GPT-2's byte-level alphabet: printable bytes stand for themselves; the others (control, space, 127-160, 173)
// become code points 256, 257, ... in byte order.
std::array<std::string, 256> byte_characters() {
  std::array<std::string, 256> out;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : next++;
    std::string s;  // UTF-8 of cp (< 0x800)
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[static_cast<size_t>(b)] = s;
  }
  return out;
}

}  // namespace

std::string tokenizer_json(const text::TiktokenBpe& tok, const std::string& bos) {
  const auto chars = byte_characters();
  auto spell = [&chars](std::string_view bytes) {
    std::string s;
    for (const char c : bytes) s += chars[static_cast<unsigned char>(c)];
    return s;
  };
  const text::TokenId base = tok.num_base_tokens();
  ordered_json vocab = ordered_json::object();
  ordered_json merges = ordered_json::array();
  for (text::TokenId id = 0; id < base; ++id) {  // ids are ranks: merges come out in the merged token's rank order
    const std::string_view token = tok.token_bytes(id);
    vocab[spell(token)] = id;
    std::vector<std::pair<text::TokenId, text::TokenId>> splits;
    for (size_t i = 1; i < token.size(); ++i) {
      const text::TokenId l = tok.rank_of(token.substr(0, i)), r = tok.rank_of(token.substr(i));
      if (l < base && r < base) splits.emplace_back(l, r);
    }
    std::sort(splits.begin(), splits.end());
    for (const auto& [l, r] : splits) merges.push_back({spell(tok.token_bytes(l)), spell(tok.token_bytes(r))});
  }
  ordered_json added = ordered_json::array();
  for (text::TokenId id = base; id < tok.vocab_size(); ++id)
    added.push_back({{"id", id},
                     {"content", std::string(tok.token_bytes(id))},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const text::TokenId bos_id = tok.special_id(bos);
  ordered_json post = nullptr;
  if (bos_id >= 0)
    post = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
  const ordered_json out = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", tok.pattern()}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merges}}}};
  return out.dump() + "\n";
}

}  // namespace plm::exporting
