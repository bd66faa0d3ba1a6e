#include "plm/text/conversation.h"

#include <memory>

namespace plm::text {
namespace {

ConversationFormat make_plm_sft() {
  ConversationFormat f;
  f.name = "plm_sft";
  f.system =
      "You are a helpful language and vision assistant. You are able to understand the visual content that the "
      "user provides, and assist the user with a variety of tasks using natural language.";
  f.bos_token = "<|begin_of_text|>";
  f.eos_token = "<|end_of_text|>";
  f.pre_system = "<|start_header_id|>system<|end_header_id|>\n\n";
  f.sep_system = "<|eot_id|>";
  f.pre_question = "<|start_header_id|>user<|end_header_id|>\n\n";
  f.sep_question = "<|eot_id|>";
  f.pre_answer = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  f.sep_answer = "<|eot_id|>";
  return f;
}

ConversationFormat make_warmup() {
  ConversationFormat f;
  f.name = "warmup";
  f.sep_answer = "\n";
  f.images_replace_question = true;
  return f;
}

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

std::string strip_media_tags(std::string text) {
  for (const char* tag : {"<image>\n", "\n<image>", "<image>", "<video>\n", "\n<video>", "<video>"})
    text = replace_all(std::move(text), tag, "");
  return text;
}

std::string place_image_tokens(const ConversationFormat& f, const std::string& text, int64_t count) {
  const std::string tokens = repeat(f.image_token, count);
  return f.images_replace_question ? tokens : tokens + text;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  std::string out;
  size_t done = 0;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, done)) {
    out.append(text, done, at - done);
    out += to;
    done = at + from.size();
  }
  out.append(text, done, std::string::npos);
  return out;
}

const ConversationFormat& ConversationFormat::named(const std::string& name) {
  static const ConversationFormat plm_sft = make_plm_sft(), warmup = make_warmup();
  if (name == "plm_sft") return plm_sft;
  if (name == "warmup") return warmup;
  throw ConversationError("unknown conversation_format '" + name + "'; the formats are plm_sft and warmup.");
}

std::vector<DialogRound> build_dialog(const ConversationFormat& f, std::vector<Turn> turns, int64_t num_images,
                                      int64_t tokens_per_image, MediaType media) {
  if (turns.empty()) throw ConversationError("the conversation is empty.");
  if (media == MediaType::multi_image) {
    for (auto& t : turns)
      if (t.from == "human")
        t.value = replace_all(std::move(t.value), "<image>", repeat(f.image_token, tokens_per_image));
  } else {
    // PLM places the image tokens on the first turn even when it is a (skipped) assistant turn, which leaves the
    // sample with media but no image tokens; refuse such a sample instead of training on a broken one.
    if (turns[0].from != "human" && num_images * tokens_per_image > 0)
      throw ConversationError(
          "the conversation starts with an assistant turn, so its image tokens would be lost "
          "with the skipped turn; start it with a human turn.");
    turns[0].value = place_image_tokens(f, strip_media_tags(std::move(turns[0].value)), num_images * tokens_per_image);
  }
  // PLM builds dicts and appends the current one at each assistant turn; the same dict can be appended twice.
  std::vector<std::shared_ptr<DialogRound>> rounds;
  std::shared_ptr<DialogRound> current;
  bool is_first = true;
  for (size_t i = 0; i < turns.size(); ++i) {
    const Turn& t = turns[i];
    if (is_first && t.from == "assistant") continue;
    if (t.from == "human") {
      current = std::make_shared<DialogRound>();
      if (is_first) current->user = f.pre_system + f.system + f.sep_system;
      current->user += f.pre_question + t.value + f.sep_question;
      is_first = false;
    } else if (t.from == "assistant") {
      current->assistant = f.pre_answer + t.value + f.sep_answer;
      rounds.push_back(current);
    } else {
      throw ConversationError("turn " + std::to_string(i) + " has from='" + t.from +
                              "', but PLM's conversations only have 'human' and 'assistant' turns.");
    }
  }
  if (rounds.empty()) throw ConversationError("the conversation has no human turn followed by an assistant turn.");
  rounds.front()->user = f.bos_token + rounds.front()->user;
  rounds.back()->assistant += f.eos_token;
  std::vector<DialogRound> out;
  out.reserve(rounds.size());
  for (const auto& r : rounds) out.push_back(*r);
  return out;
}

std::string generation_prompt(const ConversationFormat& f, std::string prompt, int64_t num_images,
                              int64_t tokens_per_image) {
  if (static_cast<int64_t>(count(prompt, "<image>")) == num_images)
    prompt = replace_all(std::move(prompt), "<image>", repeat(f.image_token, tokens_per_image));
  else
    prompt = place_image_tokens(f, strip_media_tags(std::move(prompt)), num_images * tokens_per_image);
  return f.bos_token + f.pre_system + f.system + f.sep_system + f.pre_question + prompt + f.sep_question + f.pre_answer;
}

}  // namespace plm::text
