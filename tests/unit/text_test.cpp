// Tokenizers (docs/reference.md 3.1/3.4 vectors, specials, errors, UTF-8 repair, sentencepiece) and chat formats
// (docs/reference.md 3.2/3.3 strings, masks, truncation), regions (docs/reference.md 4.1).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <sentencepiece_trainer.h>

#include "plm/text/conversation.h"
#include "plm/text/region.h"
#include "plm/text/sample_tokens.h"
#include "plm/text/tiktoken_bpe.h"

namespace fs = std::filesystem;
using namespace plm::text;
using Ids = std::vector<TokenId>;

namespace {

const Tokenizer& llama3() {
  static const auto tok = load_tokenizer(PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model");
  return *tok;
}

Ids cat(Ids a, const Ids& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int64_t> range(int64_t from, int64_t to) {
  std::vector<int64_t> r;
  for (int64_t i = from; i < to; ++i) r.push_back(i);
  return r;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

const std::string kSystem =
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.";
const std::string kSysBlock = "<|start_header_id|>system<|end_header_id|>\n\n" + kSystem + "<|eot_id|>";
const std::string kUser = "<|start_header_id|>user<|end_header_id|>\n\n";
const std::string kAssistant = "<|start_header_id|>assistant<|end_header_id|>\n\n";

}  // namespace

TEST_CASE("docs/reference.md 3.4 vectors") {
  const auto& t = llama3();
  CHECK(t.encode("This is a test sentence.") == Ids{2028, 374, 264, 1296, 11914, 13});
  CHECK(t.encode("<|begin_of_text|>This is a test sentence.<|end_of_text|>") ==
        Ids{128000, 2028, 374, 264, 1296, 11914, 13, 128001});
  CHECK(t.decode({128000, 2028, 374, 264, 1296, 11914, 13, 128001}) ==
        "<|begin_of_text|>This is a test sentence.<|end_of_text|>");
  CHECK(t.encode("<|start_header_id|>user<|end_header_id|>\n\nThis is a test sentence.<|eot_id|>") ==
        Ids{128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009});
  CHECK(t.encode("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nThis is a test sentence.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nThis is a response.<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n") ==
        Ids{128000, 128006, 9125, 128007, 271, 2028, 374,  264, 1296,   11914,  13,    128009, 128006,
            882,    128007, 271,  2028,   374, 264,  2077, 13,  128009, 128006, 78191, 128007, 271});
}

TEST_CASE("the 256 specials in PLM's order") {
  const auto& t = llama3();
  CHECK(t.vocab_size() == 128256);
  CHECK(t.special_id("<|begin_of_text|>") == 128000);
  CHECK(t.special_id("<|end_of_text|>") == 128001);
  CHECK(t.special_id("<|image|>") == 128002);
  CHECK(t.special_id("<|start_header_id|>") == 128006);
  CHECK(t.special_id("<|end_header_id|>") == 128007);
  CHECK(t.special_id("<|eot_id|>") == 128009);
  CHECK(t.special_id("<|reserved_special_token_5|>") == 128010);
  CHECK(t.special_id("<|reserved_special_token_250|>") == 128255);
  CHECK(t.special_id("<|reserved_special_token_0|>") == -1);  // stock Llama 3 naming is not PLM's
  CHECK(t.encode("<|image|><|image|>") == Ids{128002, 128002});
  CHECK(t.encode("<|foo|>").size() > 1);  // not a special: ordinary text
  CHECK(t.decode(t.encode("a<|<|image|>|>b")) == "a<|<|image|>|>b");
}

TEST_CASE("decode rejects ids outside the vocabulary") {
  CHECK_THROWS_WITH(llama3().decode({5, 128256}), Catch::Contains("token id 128256 is outside the vocabulary"));
  CHECK_THROWS_AS(llama3().decode({-1}), TokenizerError);
}

TEST_CASE("invalid UTF-8 is repaired with U+FFFD like Python's errors='replace'") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(repair_utf8("ok") == "ok");
  CHECK(repair_utf8("a\xFF"
                    "b") == "a" + fffd + "b");
  CHECK(repair_utf8("\xE2\x82") == fffd);                    // truncated 3-byte sequence: one replacement
  CHECK(repair_utf8("\xED\xA0\x80") == fffd + fffd + fffd);  // a surrogate: each byte replaced
  CHECK(repair_utf8("\xF0\x9F\x98") == fffd);                // truncated emoji
  CHECK(repair_utf8("\xC0\xAF") == fffd + fffd);             // overlong
  CHECK(repair_utf8("\xE2\x82\xAC") == "\xE2\x82\xAC");      // the euro sign is valid
  const auto& t = llama3();
  CHECK(t.encode("x\xFFy") == t.encode("x" + fffd + "y"));
}

TEST_CASE("tokenizer files: clear errors and format detection") {
  const fs::path dir = fs::temp_directory_path() / "plm_text_test";
  fs::create_directories(dir);
  CHECK_THROWS_WITH(load_tokenizer((dir / "absent.model").string()), Catch::Contains("cannot read tokenizer file"));
  { std::ofstream(dir / "bad.model") << "IQ== 0\nIg== 1\nnot base64! 2\n"; }
  CHECK_THROWS_WITH(TiktokenBpe((dir / "bad.model").string()),
                    Catch::Contains("bad.model:3: not a tiktoken BPE entry"));
  { std::ofstream(dir / "garbage.model") << "\x01\x02garbage"; }
  CHECK_THROWS_WITH(load_tokenizer((dir / "garbage.model").string()),
                    Catch::Contains("neither a tiktoken BPE file nor a sentencepiece model"));
  fs::remove_all(dir);
}

TEST_CASE("sentencepiece models work behind the same interface, with PLM's specials") {
  const fs::path dir = fs::temp_directory_path() / "plm_spm_test";
  fs::create_directories(dir);
  {
    std::ofstream corpus(dir / "corpus.txt");
    for (int i = 0; i < 200; ++i) corpus << "a red square on the left " << i << " and a blue circle above it\n";
  }
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt").string() + " --model_prefix=" + (dir / "tok").string() +
      " --vocab_size=80 --model_type=bpe --minloglevel=2 --add_dummy_prefix=false"
      " --normalization_rule_name=identity --user_defined_symbols=<|begin_of_text|>,<|image|>,<|eot_id|>");
  REQUIRE(status.ok());
  const auto tok = load_tokenizer((dir / "tok.model").string());
  const TokenId image = tok->special_id("<|image|>");
  REQUIRE(image > 0);
  CHECK(tok->special_id("<|end_header_id|>") == -1);
  const auto ids = tok->encode("<|image|><|image|>a red circle");
  REQUIRE(ids.size() > 2);
  CHECK(ids[0] == image);
  CHECK(ids[1] == image);
  CHECK(tok->decode(ids) == "<|image|><|image|>a red circle");
  CHECK_THROWS_AS(tok->decode({tok->vocab_size()}), TokenizerError);
  fs::remove_all(dir);
}

TEST_CASE("plm_sft: single image turn, exact strings, tokens and loss positions") {
  const auto& f = ConversationFormat::named("plm_sft");
  const auto dialog =
      build_dialog(f, {{"human", "<image>\nWhat is this?"}, {"assistant", "A cat."}}, 2, 4, MediaType::image);
  REQUIRE(dialog.size() == 1);
  const std::string user = "<|begin_of_text|>" + kSysBlock + kUser + repeat("<|image|>", 8) + "What is this?<|eot_id|>";
  const std::string answer = kAssistant + "A cat.<|eot_id|><|end_of_text|>";
  CHECK(dialog[0].user == user);
  CHECK(dialog[0].assistant == answer);

  const auto& t = llama3();
  const auto s = tokenize_dialog(t, dialog, 1000, 128002);
  REQUIRE(s.rejected.empty());
  const Ids u = t.encode(user), a = t.encode(answer);
  CHECK(s.ids == cat(u, a));
  CHECK(s.response_pos == range(static_cast<int64_t>(u.size()), static_cast<int64_t>(u.size() + a.size())));
  CHECK(s.image_pos.size() == 8);
  CHECK(s.image_pos.front() == static_cast<int64_t>(t.encode("<|begin_of_text|>" + kSysBlock + kUser).size()));
  CHECK(s.ids.front() == 128000);
  CHECK(s.ids.back() == 128001);
  CHECK(s.ids[s.response_pos.front()] == 128006);  // loss starts at the assistant header
  CHECK_FALSE(s.truncated);
}

TEST_CASE("plm_sft: multi-turn puts the system prompt and BOS first, EOS last, loss on every answer") {
  const auto& f = ConversationFormat::named("plm_sft");
  // A leading assistant turn would take the image tokens with it when skipped: refused, not silently broken.
  CHECK_THROWS_WITH(build_dialog(f, {{"assistant", "x"}, {"human", "Q1"}, {"assistant", "A1"}}, 1, 3, MediaType::video),
                    Catch::Contains("starts with an assistant turn"));
  const auto dialog = build_dialog(
      f, {{"human", "Q1"}, {"assistant", "A1"}, {"human", "Q2"}, {"assistant", "A2"}, {"human", "unanswered"}}, 1, 3,
      MediaType::video);
  REQUIRE(dialog.size() == 2);
  CHECK(dialog[0].user == "<|begin_of_text|>" + kSysBlock + kUser + repeat("<|image|>", 3) + "Q1<|eot_id|>");
  CHECK(dialog[0].assistant == kAssistant + "A1<|eot_id|>");
  CHECK(dialog[1].user == kUser + "Q2<|eot_id|>");
  CHECK(dialog[1].assistant == kAssistant + "A2<|eot_id|><|end_of_text|>");
  const auto& t = llama3();
  const auto s = tokenize_dialog(t, dialog, 1000, 128002);
  const auto u1 = t.encode(dialog[0].user), a1 = t.encode(dialog[0].assistant), u2 = t.encode(dialog[1].user),
             a2 = t.encode(dialog[1].assistant);
  std::vector<int64_t> want = range(u1.size(), u1.size() + a1.size());
  const auto second = range(u1.size() + a1.size() + u2.size(), u1.size() + a1.size() + u2.size() + a2.size());
  want.insert(want.end(), second.begin(), second.end());
  CHECK(s.response_pos == want);
  CHECK(s.ids.size() == u1.size() + a1.size() + u2.size() + a2.size());
}

TEST_CASE("truncation keeps whole rounds and rejects a sample whose first turn does not fit") {
  const auto& f = ConversationFormat::named("plm_sft");
  const auto dialog = build_dialog(f, {{"human", "Q1"}, {"assistant", "A1"}, {"human", "Q2"}, {"assistant", "A2"}}, 1,
                                   16, MediaType::image);
  const auto& t = llama3();
  const auto u1 = t.encode(dialog[0].user), a1 = t.encode(dialog[0].assistant), u2 = t.encode(dialog[1].user);
  // room for round 1 and not for the second user turn: (len + part + 1) <= seq_len decides
  const auto fits_one = static_cast<int64_t>(u1.size() + a1.size() + u2.size());
  const auto s = tokenize_dialog(t, dialog, fits_one, 128002);
  CHECK(s.truncated);
  CHECK(s.ids == cat(u1, a1));
  CHECK(s.response_pos.size() == a1.size());
  // exactly enough for the second user turn too (+1): it is kept, its answer is not
  const auto s2 = tokenize_dialog(t, dialog, fits_one + 1, 128002);
  CHECK(s2.ids.size() == u1.size() + a1.size() + u2.size());
  CHECK(s2.response_pos.size() == a1.size());
  // only the first user turn fits: valid, no loss tokens (the reference behaves the same)
  const auto s3 = tokenize_dialog(t, dialog, static_cast<int64_t>(u1.size()) + 1, 128002);
  CHECK(s3.rejected.empty());
  CHECK(s3.response_pos.empty());
  // not even the first turn: rejected with a reason
  const auto s4 = tokenize_dialog(t, dialog, static_cast<int64_t>(u1.size()), 128002);
  CHECK_THAT(s4.rejected, Catch::Contains("does not fit in max_seqlen"));
  CHECK(s4.ids.empty());
}

TEST_CASE("warmup: image tokens replace the question, no BOS, answer is caption + newline") {
  const auto& f = ConversationFormat::named("warmup");
  const auto dialog =
      build_dialog(f, {{"human", "ignored question"}, {"assistant", "A photo of a dog."}}, 1, 5, MediaType::image);
  REQUIRE(dialog.size() == 1);
  CHECK(dialog[0].user == repeat("<|image|>", 5));
  CHECK(dialog[0].assistant == "A photo of a dog.\n");
  const auto s = tokenize_dialog(llama3(), dialog, 100, 128002);
  CHECK(s.ids.front() == 128002);
  CHECK(s.response_pos == range(5, static_cast<int64_t>(s.ids.size())));
  CHECK(s.image_pos == range(0, 5));
}

TEST_CASE("multi-image: each <image> tag in human turns becomes one image's tokens, in place") {
  const auto& f = ConversationFormat::named("plm_sft");
  const auto dialog = build_dialog(f,
                                   {{"human", "Compare <image> and <image>."},
                                    {"assistant", "Same."},
                                    {"human", "And <image>?"},
                                    {"assistant", "No."}},
                                   3, 2, MediaType::multi_image);
  CHECK(dialog[0].user ==
        "<|begin_of_text|>" + kSysBlock + kUser + "Compare <|image|><|image|> and <|image|><|image|>.<|eot_id|>");
  CHECK(dialog[1].user == kUser + "And <|image|><|image|>?<|eot_id|>");
}

TEST_CASE("text-only samples get no image tokens, and bad conversations are clear errors") {
  const auto& f = ConversationFormat::named("plm_sft");
  const auto dialog = build_dialog(f, {{"human", "Hi"}, {"assistant", "Hello"}}, 0, 0, MediaType::text);
  CHECK(dialog[0].user == "<|begin_of_text|>" + kSysBlock + kUser + "Hi<|eot_id|>");
  CHECK_THROWS_WITH(build_dialog(f, {{"human", "Hi"}, {"gpt", "Hello"}}, 0, 0, MediaType::text),
                    Catch::Contains("turn 1 has from='gpt'"));
  CHECK_THROWS_WITH(build_dialog(f, {{"human", "Hi"}}, 0, 0, MediaType::text),
                    Catch::Contains("no human turn followed by an assistant turn"));
  CHECK_THROWS_WITH(ConversationFormat::named("chatml"), Catch::Contains("plm_sft and warmup"));
}

TEST_CASE("irregular turn orders reproduce the reference's dict aliasing") {
  const auto& f = ConversationFormat::named("plm_sft");
  // assistant, assistant: the same round is appended twice and holds the later answer (and the EOS)
  const auto twice = build_dialog(f, {{"human", "Q"}, {"assistant", "A1"}, {"assistant", "A2"}}, 0, 0, MediaType::text);
  // leading assistant turns are skipped (text-only: no image tokens to lose)
  CHECK(build_dialog(f, {{"assistant", "x"}, {"human", "Q"}, {"assistant", "A"}}, 0, 0, MediaType::text).size() == 1);
  REQUIRE(twice.size() == 2);
  CHECK(twice[0].assistant == kAssistant + "A2<|eot_id|><|end_of_text|>");
  CHECK(twice[1].assistant == twice[0].assistant);
  CHECK(twice[1].user == twice[0].user);
  // human, human: the later question replaces the first, which took the system prompt with it
  const auto later = build_dialog(f, {{"human", "Q1"}, {"human", "Q2"}, {"assistant", "A"}}, 0, 0, MediaType::text);
  REQUIRE(later.size() == 1);
  CHECK(later[0].user == "<|begin_of_text|>" + kUser + "Q2<|eot_id|>");
}

TEST_CASE("generation prompt, with and without matching <image> tags") {
  const auto& f = ConversationFormat::named("plm_sft");
  const std::string head = "<|begin_of_text|>" + kSysBlock + kUser;
  CHECK(generation_prompt(f, "Describe the video.", 2, 3) ==
        head + repeat("<|image|>", 6) + "Describe the video.<|eot_id|>" + kAssistant);
  CHECK(generation_prompt(f, "<image>\nWhat?", 1, 2) == head + "<|image|><|image|>\nWhat?<|eot_id|>" + kAssistant);
  CHECK(generation_prompt(f, "A <image> B <image>", 1, 2) == head + "<|image|><|image|>A  B <|eot_id|>" + kAssistant);
  const auto ids = llama3().encode(generation_prompt(f, "Hi", 1, 1));
  CHECK(ids[ids.size() - 4] == 128006);
  CHECK(ids.back() == 271);  // "\n\n" after <|end_header_id|>: the model writes the answer next
}

TEST_CASE("bbox text: normalised corners, clamped, truncated to 3 digits, substituted in place") {
  CHECK(format_bbox({40, 482, 72, 94}, 1000, 1000) == "[040,482,112,576]");
  CHECK(format_bbox({-5, 0, 2000, 50}, 1000, 100) == "[000,000,999,500]");  // clamped to [0, 0.999]
  CHECK(format_bbox({1, 1, 1, 1}, 3, 3) == "[333,333,666,666]");            // int() truncates
  const std::vector<std::string> boxes = {"[001,002,003,004]", "[005,006,007,008]"};
  CHECK(substitute_regions("<|bbox1|> is left of <|bbox0|>; <|bbox|> <|bboxx|>", boxes) ==
        "[005,006,007,008] is left of [001,002,003,004]; <|bbox|> <|bboxx|>");
  CHECK_THROWS_WITH(substitute_regions("<|bbox2|>", boxes), Catch::Contains("<|bbox2|> but the sample has 2"));
}

TEST_CASE("a region sample: boxes substituted in every turn, then the usual template and mask") {
  std::vector<Turn> turns = {{"human", "What is in <|bbox0|>?"},
                             {"assistant", "A dog at <|bbox0|>, left of <|bbox1|>."}};
  const std::vector<std::string> boxes = {format_bbox({40, 482, 72, 94}, 1000, 1000),
                                          format_bbox({0, 0, 10, 10}, 100, 100)};
  for (auto& t : turns) t.value = substitute_regions(t.value, boxes);
  const auto& f = ConversationFormat::named("plm_sft");
  const auto dialog = build_dialog(f, turns, 1, 2, MediaType::image);
  CHECK(dialog[0].user ==
        "<|begin_of_text|>" + kSysBlock + kUser + "<|image|><|image|>What is in [040,482,112,576]?<|eot_id|>");
  CHECK(dialog[0].assistant ==
        kAssistant + "A dog at [040,482,112,576], left of [000,000,100,100].<|eot_id|><|end_of_text|>");
  const auto s = tokenize_dialog(llama3(), dialog, 512, 128002);
  const auto answer = llama3().encode(dialog[0].assistant);
  REQUIRE(s.response_pos.size() == answer.size());
  for (size_t k = 0; k < answer.size(); ++k) CHECK(s.ids[s.response_pos[k]] == answer[k]);
}
