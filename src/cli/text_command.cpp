#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "plm/text/tokenizer.h"

namespace plm::cli {
namespace {

struct TextOptions {
  std::string tokenizer;
  bool jsonl = false;
};

void write_ids(const std::vector<text::TokenId>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) (line += i ? " " : "") += std::to_string(ids[i]);
  std::cout << line << '\n';
}

std::vector<text::TokenId> parse_ids(const std::string& text, size_t line_no) {
  std::vector<text::TokenId> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size())
      throw text::TokenizerError("stdin line " + std::to_string(line_no) + ": '" + word + "' is not a token id.");
    ids.push_back(static_cast<text::TokenId>(v));
  }
  return ids;
}

int encode(const TextOptions& o) {
  const auto tok = text::load_tokenizer(o.tokenizer);
  if (!o.jsonl) {
    const std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    write_ids(tok->encode(all));
    return 0;
  }
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw text::TokenizerError("stdin line " + std::to_string(n) + " is not JSON: " + e.what());
    }
    if (!j.is_string()) throw text::TokenizerError("stdin line " + std::to_string(n) + " is not a JSON string.");
    write_ids(tok->encode(j.get<std::string>()));
  }
  return 0;
}

int decode(const TextOptions& o) {
  const auto tok = text::load_tokenizer(o.tokenizer);
  if (!o.jsonl) {
    const std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    std::cout << tok->decode(parse_ids(all, 1));
    return 0;
  }
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    // Decoded bytes may end mid-character; JSON needs valid UTF-8, so repair as Python's decode does.
    const std::string text = text::repair_utf8(tok->decode(parse_ids(line, n)));
    std::cout << nlohmann::json(text).dump() << '\n';
  }
  return 0;
}

}  // namespace

void add_text_command(CLI::App& app, int& exit_code) {
  auto* text = app.add_subcommand("text", "Tokenize and detokenize with a Llama 3 (tiktoken) or sentencepiece model");
  text->require_subcommand(1);
  auto o = std::make_shared<TextOptions>();

  auto* enc = text->add_subcommand(
      "encode",
      "stdin text -> one line of space-separated ids (with --jsonl: one JSON string per line in, one line out)");
  auto* dec = text->add_subcommand(
      "decode", "stdin ids -> text (with --jsonl: one line of ids in, one JSON string per line out)");
  for (auto* cmd : {enc, dec}) {
    cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.model (tiktoken BPE) or a sentencepiece .model")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_flag("--jsonl", o->jsonl, "one text per line, as JSON strings");
  }
  enc->callback([o, &exit_code] { exit_code = report_errors([&] { return encode(*o); }); });
  dec->callback([o, &exit_code] { exit_code = report_errors([&] { return decode(*o); }); });
}

}  // namespace plm::cli
