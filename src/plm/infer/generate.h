// Batched generation and continuation scoring with a KV cache (docs/reference.md 8), the C++ counterpart of PLM's
// PackedCausalTransformerGenerator, used by `plm generate`, `plm eval` and the demo.
//
// Batching. PLM packs prompts into one row with a plain causal prefill mask, which is only correct for a single
// prompt (docs/reference.md 8 and 11 item 10). Here prompts of different lengths are RIGHT-padded into a [B, max L]
// batch: row b's tokens sit at positions (= cache slots) 0..L_b-1 and its generated tokens continue at L_b, L_b+1, ...
// So
//  - RoPE positions are each prompt's own 0..L-1, exactly as for the prompt alone;
//  - the prefill is plain causal attention: a real token never sees the padding, which only follows it;
//  - a decode step writes row b's token at slot L_b+t and lets it read slots 0..L_b+t of row b (a per-row mask,
//    model::CachedStep): the padding slots of the prefill are overwritten before they become visible.
// Finished rows keep running (their tokens are ignored) until every row is done or max_gen_len is reached.
// Unlike PLM's loop, which never checks the token sampled from the prefill, every token (the first included) is
// checked for a stop token or string, as transformers' generate does.
#pragma once

#include <string>
#include <vector>

#include "plm/infer/prompt.h"
#include "plm/infer/sampling.h"
#include "plm/model/perception_lm.h"

namespace plm::infer {

struct GenerateOptions {
  SamplingOptions sampling;        // greedy by default
  int64_t max_gen_len = 256;       // new tokens per prompt, the stop token included
  std::vector<std::string> until;  // stop strings: a row stops once its last tokens decode to text containing one
  uint64_t seed = 0;  // seeds the Generator's CPU at::Generator once, at construction (used when temperature > 0):
                      // draws continue across generate() calls and are taken row by row within a batch, so the
                      // same prompts in the same calls on a new Generator reproduce the same tokens

  /// Throws GenerateError ("bad_option") naming the option.
  void check() const;
};

enum class StopReason { stop_token, stop_string, max_gen_len };
const char* to_string(StopReason reason);

/// One prompt's result.
struct Generation {
  std::string text;                       // decoded ids with the <|eot_id|> / <|end_of_text|> literals removed
  std::vector<text::TokenId> ids;         // generated ids, the stop token (if any) included
  std::vector<text::TokenId> prompt_ids;  // what the model read
  StopReason stop = StopReason::max_gen_len;
};

/// Wall-clock time of one generate call (the vision tower counts as prefill).
struct GenerationTiming {
  double prefill_s = 0, decode_s = 0;
  int64_t prompt_tokens = 0;     // sum over prompts (padding excluded)
  int64_t generated_tokens = 0;  // sum over prompts, stop tokens included
  int64_t decode_tokens = 0;     // generated tokens that came from decode steps (all but each prompt's first)
  int64_t decode_steps = 0;      // batched forward passes after the prefill
  /// generated_tokens / (prefill_s + decode_s).
  double tokens_per_s() const;
  /// decode_tokens / decode_s.
  double decode_tokens_per_s() const;
};

struct GenerateResult {
  std::vector<Generation> generations;  // in prompt order
  GenerationTiming timing;
};

/// Log-likelihood of a continuation given a prompt.
struct ContinuationScore {
  std::vector<text::TokenId> ids;     // the continuation's tokens (encoded on their own, as PLM encodes each turn)
  std::vector<float> token_logprobs;  // log p(ids[k] | prompt, ids[..k]), fp32 log-softmax
  double sum_logprob = 0;             // their sum (0 for an empty continuation)
};

/// Right-padded prompt ids and their media, as the model reads them.
struct PromptBatch {
  at::Tensor tokens;   // int64 [B, max L], padded with `pad_id`
  at::Tensor lengths;  // int64 [B]
  at::Tensor pixels;   // float32 [sum of chunks, 3, S, S] in row order; undefined when no prompt has media
};
PromptBatch make_batch(const std::vector<PreparedPrompt>& prompts, text::TokenId pad_id);

/// Answers prompts with a model: holds the model, the prompt encoder (tokenizer + media preprocessing) and the
/// decoding options; each call prefills a batch into a fresh KVCache and decodes until every row stops.
class Generator {
 public:
  /// `model` is used as it is (dtype, device; call eval() first). Throws GenerateError for bad options and when
  /// the tokenizer lacks <|eot_id|> and <|end_of_text|>.
  Generator(model::PerceptionLM model, PromptEncoder prompts, GenerateOptions options);

  /// Generates for every prompt in one batch. Throws GenerateError for an empty prompt or media given to a model
  /// without a vision tower, data::MediaSampleError for unreadable media, c10::Error when the prompt's image
  /// tokens do not match its media.
  GenerateResult generate(const std::vector<Prompt>& prompts);
  GenerateResult generate(const std::vector<PreparedPrompt>& prompts);

  /// Scores each continuation after `prompt` (the answer text after the generation prompt's assistant header,
  /// e.g. a multiple-choice option). The prompt is prefilled once; its cache is copied per continuation and all
  /// continuations run as one batch (memory: continuations x longest x vocab fp32 log-probs).
  std::vector<ContinuationScore> score(const Prompt& prompt, const std::vector<std::string>& continuations);
  std::vector<ContinuationScore> score(const PreparedPrompt& prompt,
                                       const std::vector<std::vector<text::TokenId>>& continuations);

  const PromptEncoder& prompts() const { return prompts_; }
  const GenerateOptions& options() const { return options_; }
  model::PerceptionLM& model() { return model_; }

 private:
  /// Embeds a batch (vision vectors stitched in) on the model's device.
  at::Tensor embed(const PromptBatch& batch) const;
  /// Whether `ids` (one row's generated tokens so far) ends with a stop token or a stop string.
  std::optional<StopReason> stopped(const std::vector<text::TokenId>& ids) const;

  model::PerceptionLM model_;
  PromptEncoder prompts_;
  GenerateOptions options_;
  std::vector<text::TokenId> stop_ids_;
  text::TokenId image_id_;
  at::Generator rng_;
};

}  // namespace plm::infer
