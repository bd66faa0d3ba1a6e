// PLM's chat formats (docs/reference.md 3.2, core/data/conversation.py): turning a sample's conversation into the
// template strings the model is trained on, and the prompt it generates from.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "plm/common/user_error.h"

namespace plm::text {

/// One entry of a sample's "conversations": `from` is "human" or "assistant".
struct Turn {
  std::string from;
  std::string value;
};

/// What the sample's media is; decides where image tokens go.
enum class MediaType { image, multi_image, video, text };

/// A malformed conversation (unknown role, no complete human/assistant pair); one sentence.
struct ConversationError : UserError {
  explicit ConversationError(const std::string& what) : UserError(what) {}
};

/// A conversation template. The fields are PLM's, byte for byte.
struct ConversationFormat {
  std::string name;
  std::string system;
  std::string bos_token, eos_token;
  std::string pre_system, sep_system;
  std::string pre_question, sep_question;
  std::string pre_answer, sep_answer;
  std::string image_token = "<|image|>";
  /// warmup's place_image_token returns only the image tokens: the question text is dropped.
  bool images_replace_question = false;

  /// "plm_sft" (stages 2-3, generation) or "warmup" (stage 1). Throws ConversationError listing the names.
  static const ConversationFormat& named(const std::string& name);
};

/// One dialog round as template text: the user part (system block first on the first round, BOS on the first
/// round) and the assistant part (EOS on the last round).
struct DialogRound {
  std::string user;
  std::string assistant;
};

/// PLM's get_conversation_dict_list. For multi_image, each "<image>" tag in human turns becomes
/// `tokens_per_image` image tokens in place; otherwise "<image>"/"<video>" tags (with an adjacent newline) are
/// removed from the first turn and num_images * tokens_per_image image tokens are placed before its text
/// (warmup: instead of it). Leading assistant turns are skipped; a human turn without an answer is dropped.
/// Reproduces the reference's aliasing on irregular input: two assistant turns in a row make the round appear
/// twice with the later answer; two human turns in a row keep the later one.
/// Throws ConversationError for a role other than human/assistant, when no complete round remains, and (where
/// the reference would silently lose the image tokens) when a sample with media starts with an assistant turn.
std::vector<DialogRound> build_dialog(const ConversationFormat& format, std::vector<Turn> turns, int64_t num_images,
                                      int64_t tokens_per_image, MediaType media);

/// PLM's get_generation_prompt: if `prompt` has exactly `num_images` "<image>" tags each becomes
/// `tokens_per_image` image tokens, else tags are stripped and the image tokens placed as in training. Ends with
/// the assistant header, ready for generation.
std::string generation_prompt(const ConversationFormat& format, std::string prompt, int64_t num_images,
                              int64_t tokens_per_image);

/// Python's str.replace(from, to): every non-overlapping occurrence, left to right.
std::string replace_all(std::string text, const std::string& from, const std::string& to);

}  // namespace plm::text
