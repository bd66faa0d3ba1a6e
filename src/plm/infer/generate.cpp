#include "plm/infer/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>

#include "plm/infer/infer_error.h"
#include "plm/infer/kv_cache.h"
#include "plm/text/conversation.h"

namespace plm::infer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

at::Tensor to_tensor(const std::vector<text::TokenId>& ids) {
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
}

}  // namespace

void GenerateOptions::check() const {
  sampling.check();
  if (max_gen_len < 1)
    throw GenerateError("bad_option", "--max-gen-len must be at least 1, got " + std::to_string(max_gen_len) + ".");
  for (const auto& s : until)
    if (s.empty()) throw GenerateError("bad_option", "a stop string (--until) must not be empty.");
}

const char* to_string(StopReason reason) {
  switch (reason) {
    case StopReason::stop_token:
      return "stop_token";
    case StopReason::stop_string:
      return "stop_string";
    case StopReason::max_gen_len:
      return "max_gen_len";
  }
  return "?";
}

double GenerationTiming::tokens_per_s() const {
  const double s = prefill_s + decode_s;
  return s > 0 ? static_cast<double>(generated_tokens) / s : 0.0;
}

double GenerationTiming::decode_tokens_per_s() const {
  return decode_s > 0 ? static_cast<double>(decode_tokens) / decode_s : 0.0;
}

PromptBatch make_batch(const std::vector<PreparedPrompt>& prompts, text::TokenId pad_id) {
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.ids.size()));
  PromptBatch b;
  b.tokens = at::full({static_cast<int64_t>(prompts.size()), longest}, pad_id, at::kLong);
  b.lengths = at::empty({static_cast<int64_t>(prompts.size())}, at::kLong);
  std::vector<at::Tensor> pixels;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto n = static_cast<int64_t>(prompts[i].ids.size());
    b.tokens[static_cast<int64_t>(i)].slice(0, 0, n).copy_(to_tensor(prompts[i].ids));
    b.lengths[static_cast<int64_t>(i)] = n;
    if (prompts[i].pixels.defined()) pixels.push_back(prompts[i].pixels);
  }
  if (!pixels.empty()) b.pixels = at::cat(pixels, 0);
  return b;
}

Generator::Generator(model::PerceptionLM model, PromptEncoder prompts, GenerateOptions options)
    : model_(std::move(model)),
      prompts_(std::move(prompts)),
      options_(std::move(options)),
      image_id_(prompts_.tokenizer().special_id("<|image|>")),
      rng_(at::make_generator<at::CPUGeneratorImpl>(options_.seed)) {
  options_.check();
  for (const char* literal : {"<|eot_id|>", "<|end_of_text|>"})
    if (const text::TokenId id = prompts_.tokenizer().special_id(literal); id >= 0) stop_ids_.push_back(id);
  if (stop_ids_.empty())
    throw GenerateError("no_tokenizer", "the tokenizer has neither <|eot_id|> nor <|end_of_text|>: no stop token.");
}

GenerateResult Generator::generate(const std::vector<Prompt>& prompts) {
  std::vector<PreparedPrompt> prepared;
  prepared.reserve(prompts.size());
  for (const auto& p : prompts) prepared.push_back(prompts_(p));
  return generate(prepared);
}

at::Tensor Generator::embed(const PromptBatch& batch) const {
  const at::Device device = model_->tok_embeddings.device();
  model::ModelInputs in;
  in.tokens = batch.tokens.to(device);
  if (batch.pixels.defined()) {
    if (!model_->vision_model)
      throw GenerateError("no_vision_model", "this checkpoint has no vision model; ask a text-only question.");
    in.images = batch.pixels.to(device);
    in.image_mask = in.tokens == image_id_;
  }
  return model_->embed(in);
}

std::optional<StopReason> Generator::stopped(const std::vector<text::TokenId>& ids) const {
  if (std::find(stop_ids_.begin(), stop_ids_.end(), ids.back()) != stop_ids_.end()) return StopReason::stop_token;
  if (options_.until.empty()) return std::nullopt;
  // A stop string of n bytes spans at most n tokens (every token decodes to at least one byte), as PLM's window.
  size_t window = 0;
  for (const auto& s : options_.until) window = std::max(window, s.size());
  const size_t from = ids.size() > window ? ids.size() - window : 0;
  const std::string tail = prompts_.tokenizer().decode({ids.begin() + static_cast<std::ptrdiff_t>(from), ids.end()});
  for (const auto& s : options_.until)
    if (tail.find(s) != std::string::npos) return StopReason::stop_string;
  return std::nullopt;
}

GenerateResult Generator::generate(const std::vector<PreparedPrompt>& prompts) {
  GenerateResult result;
  if (prompts.empty()) return result;
  for (size_t i = 0; i < prompts.size(); ++i)
    if (prompts[i].ids.empty()) throw GenerateError("bad_prompt", "prompt " + std::to_string(i) + " has no tokens.");
  at::InferenceMode inference;
  const auto& m = *model_;
  const auto start = Clock::now();
  const PromptBatch batch = make_batch(prompts, /*pad_id=*/0);
  const int64_t rows = batch.tokens.size(0), longest = batch.tokens.size(1);
  const at::Device device = m.tok_embeddings.device();
  const at::Tensor lengths = batch.lengths.to(device);
  KVCache cache(m, rows, longest + options_.max_gen_len);
  const model::RopeTable rope = rope_table(m, cache.capacity());

  // Prefill: each row's logits at its last prompt token.
  const at::Tensor row = at::arange(rows, lengths.options());
  at::Tensor hidden = m.hidden_cached(embed(batch), model::CachedStep::prefill(rope, rows, longest), cache.layers());
  at::Tensor logits = at::linear(hidden.index({row, lengths - 1}), m.output_weight());

  result.generations.resize(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  for (size_t i = 0; i < prompts.size(); ++i) {
    result.generations[i].prompt_ids = prompts[i].ids;
    result.timing.prompt_tokens += static_cast<int64_t>(prompts[i].ids.size());
  }
  auto decode_start = Clock::now();
  for (int64_t t = 0;; ++t) {
    const at::Tensor next = sample_tokens(logits, options_.sampling, rng_);
    if (t == 0) {
      result.timing.prefill_s = seconds_since(start);
      decode_start = Clock::now();
    }
    const auto* next_ids = next.data_ptr<int64_t>();
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (done[i]) continue;
      Generation& g = result.generations[i];
      g.ids.push_back(static_cast<text::TokenId>(next_ids[i]));
      if (t > 0) ++result.timing.decode_tokens;
      if (const auto reason = stopped(g.ids)) {
        g.stop = *reason;
        done[i] = true;
      }
    }
    if (t + 1 == options_.max_gen_len || std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    const at::Tensor positions = (lengths + t).unsqueeze(1);
    model::ModelInputs step_in;
    step_in.tokens = next.to(device).unsqueeze(1);
    hidden = m.hidden_cached(m.embed(step_in), model::CachedStep::at(rope, positions), cache.layers());
    logits = at::linear(hidden.select(1, 0), m.output_weight());
    ++result.timing.decode_steps;
  }
  result.timing.decode_s = seconds_since(decode_start);
  for (auto& g : result.generations) {
    result.timing.generated_tokens += static_cast<int64_t>(g.ids.size());
    std::string text = prompts_.tokenizer().decode(g.ids);
    for (const char* literal : {"<|eot_id|>", "<|end_of_text|>"})
      text = text::replace_all(std::move(text), literal, "");
    g.text = std::move(text);
  }
  return result;
}

std::vector<ContinuationScore> Generator::score(const Prompt& prompt, const std::vector<std::string>& continuations) {
  std::vector<std::vector<text::TokenId>> ids;
  ids.reserve(continuations.size());
  for (const auto& c : continuations) ids.push_back(prompts_.tokenizer().encode(c));
  return score(prompts_(prompt), ids);
}

std::vector<ContinuationScore> Generator::score(const PreparedPrompt& prompt,
                                                const std::vector<std::vector<text::TokenId>>& continuations) {
  if (prompt.ids.empty()) throw GenerateError("bad_prompt", "the prompt to score after has no tokens.");
  std::vector<ContinuationScore> out(continuations.size());
  int64_t longest = 0;
  for (size_t i = 0; i < continuations.size(); ++i) {
    out[i].ids = continuations[i];
    longest = std::max<int64_t>(longest, static_cast<int64_t>(continuations[i].size()));
  }
  if (longest == 0) return out;
  at::InferenceMode inference;
  const auto& m = *model_;
  const at::Device device = m.tok_embeddings.device();
  const PromptBatch batch = make_batch({prompt}, 0);
  const int64_t length = batch.tokens.size(1), n = static_cast<int64_t>(continuations.size());
  KVCache prompt_cache(m, 1, length + longest);
  const model::RopeTable rope = rope_table(m, prompt_cache.capacity());
  const at::Tensor last =
      m.hidden_cached(embed(batch), model::CachedStep::prefill(rope, 1, length), prompt_cache.layers())
          .select(1, length - 1);  // [1, dim]
  // All continuations at once: positions length..length+longest-1 on copies of the prompt's cache.
  KVCache cache = prompt_cache.select_rows(at::zeros({n}, at::TensorOptions(at::kLong).device(device)));
  std::vector<PreparedPrompt> rows;
  for (const auto& c : continuations) rows.push_back({c, {}});
  model::ModelInputs in;
  in.tokens = make_batch(rows, 0).tokens.to(device);
  const at::Tensor positions = (at::arange(longest, in.tokens.options()) + length).unsqueeze(0).expand({n, longest});
  const at::Tensor hidden = m.hidden_cached(m.embed(in), model::CachedStep::at(rope, positions), cache.layers());
  // Row i, token k is predicted by the prompt's last position (k = 0) or by continuation position k - 1.
  const at::Tensor h = at::cat({last.unsqueeze(0).expand({n, 1, last.size(-1)}), hidden.narrow(1, 0, longest - 1)}, 1);
  const at::Tensor logprobs =
      at::log_softmax(at::linear(h, m.output_weight()).to(at::kFloat), -1).gather(-1, in.tokens.unsqueeze(-1));
  const at::Tensor lp = logprobs.squeeze(-1).cpu().contiguous();
  for (int64_t i = 0; i < n; ++i) {
    auto& s = out[static_cast<size_t>(i)];
    const auto* row = lp[i].data_ptr<float>();
    s.token_logprobs.assign(row, row + s.ids.size());
    for (float v : s.token_logprobs) s.sum_logprob += v;
  }
  return out;
}

}  // namespace plm::infer
