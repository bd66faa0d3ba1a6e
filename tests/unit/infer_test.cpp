// Generation with the KV cache (src/plm/infer): cached == recomputed for batches of prompts of different lengths,
// sampling rules, stop tokens and strings, continuation scoring, prompt encoding.
#include "torch_catch.h"

#include <ATen/CPUGeneratorImpl.h>

#include <set>

#include "plm/config/load.h"
#include "plm/infer/generate.h"
#include "plm/infer/infer_error.h"
#include "plm/infer/kv_cache.h"
#include "plm/model/init.h"
#include "plm/text/conversation.h"

using namespace plm;

namespace {

const char* const kTokenizer = PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model";
constexpr text::TokenId kImage = 128002;

model::PerceptionLM tiny_model() {
  const auto args = config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml").args.model;
  model::PerceptionLM m(args);
  model::init_all(*m);
  m->eval();
  return m;
}

std::shared_ptr<const text::Tokenizer> llama3() {
  static const std::shared_ptr<const text::Tokenizer> tok = text::load_tokenizer(kTokenizer);
  return tok;
}

data::PreprocessOptions tiny_preprocess(const model::PerceptionLMImpl& m) {
  config::TrainArgs args;
  args.model = m.args;
  return data::PreprocessOptions::from(args);
}

infer::Generator make_generator(const model::PerceptionLM& m, infer::GenerateOptions o,
                                std::shared_ptr<const text::Tokenizer> tok = llama3()) {
  return infer::Generator(m, infer::PromptEncoder(std::move(tok), tiny_preprocess(*m)), std::move(o));
}

// Prompts of lengths 5, 13 and 9; the second has one image (4 image tokens in the tiny model) after its third token.
std::vector<infer::PreparedPrompt> mixed_prompts() {
  at::manual_seed(3);
  std::vector<infer::PreparedPrompt> out;
  for (int64_t n : {5, 13, 9}) {
    const at::Tensor ids = at::randint(0, 128000, {n}, at::kLong);
    out.push_back({std::vector<text::TokenId>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n), {}});
  }
  for (int i = 3; i < 7; ++i) out[1].ids[static_cast<size_t>(i)] = kImage;
  out[1].pixels = at::randn({1, 3, 56, 56});
  return out;
}

// The full-sequence logits of one prompt (+ tokens), no cache: what every cached step must reproduce.
at::Tensor full_logits(const model::PerceptionLM& m, const infer::PreparedPrompt& p,
                       const std::vector<text::TokenId>& extra = {}) {
  std::vector<int64_t> ids(p.ids.begin(), p.ids.end());
  ids.insert(ids.end(), extra.begin(), extra.end());
  model::ModelInputs in;
  in.tokens = at::tensor(ids, at::kLong).unsqueeze(0);
  if (p.pixels.defined()) {
    in.images = p.pixels;
    in.image_mask = in.tokens == kImage;
  }
  at::NoGradGuard no_grad;
  return m->forward(in)[0].to(at::kFloat);  // [S, V]
}

// Greedy generation that recomputes the whole sequence at every step.
std::vector<text::TokenId> recompute_greedy(const model::PerceptionLM& m, const infer::PreparedPrompt& p,
                                            int64_t max_gen_len) {
  std::vector<text::TokenId> out;
  for (int64_t t = 0; t < max_gen_len; ++t) {
    const auto next = static_cast<text::TokenId>(full_logits(m, p, out)[-1].argmax().item<int64_t>());
    out.push_back(next);
    if (next == 128009 || next == 128001) break;
  }
  return out;
}

// A tokenizer whose <|eot_id|> is another id: lets a test choose which generated token is a stop token.
struct RenamedEot : text::Tokenizer {
  std::shared_ptr<const text::Tokenizer> base;
  text::TokenId eot;
  RenamedEot(std::shared_ptr<const text::Tokenizer> b, text::TokenId e) : base(std::move(b)), eot(e) {}
  std::vector<text::TokenId> encode(std::string_view s) const override { return base->encode(s); }
  std::string decode(const std::vector<text::TokenId>& ids) const override { return base->decode(ids); }
  text::TokenId vocab_size() const override { return base->vocab_size(); }
  text::TokenId special_id(std::string_view literal) const override {
    if (literal == "<|eot_id|>") return eot;
    if (literal == "<|end_of_text|>") return -1;
    return base->special_id(literal);
  }
};

}  // namespace

TEST_CASE("cached decode steps give the logits of a full forward for a right-padded batch") {
  const auto m = tiny_model();
  const auto prompts = mixed_prompts();
  const infer::PromptBatch batch = infer::make_batch(prompts, 0);
  at::InferenceMode guard;
  infer::KVCache cache(*m, 3, 13 + 4);
  const auto rope = infer::rope_table(*m, cache.capacity());
  model::ModelInputs in{batch.tokens, batch.pixels, batch.tokens == kImage, {}, {}};
  at::Tensor h = m->hidden_cached(m->embed(in), model::CachedStep::prefill(rope, 3, 13), cache.layers());
  std::vector<std::vector<text::TokenId>> fed(3);
  for (int64_t t = 0; t < 4; ++t) {
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t at_pos = t == 0 ? batch.lengths[b].item<int64_t>() - 1 : 0;
      const at::Tensor got = at::linear(h[b][at_pos], m->output_weight());
      const at::Tensor want = full_logits(m, prompts[static_cast<size_t>(b)], fed[static_cast<size_t>(b)])[-1];
      INFO("step " << t << " row " << b);
      CHECK(at::allclose(got, want, 1e-4, 1e-5));
    }
    // Feed different tokens per row, at each row's own next position.
    const at::Tensor next = at::randint(0, 128000, {3, 1}, at::kLong);
    for (int64_t b = 0; b < 3; ++b)
      fed[static_cast<size_t>(b)].push_back(static_cast<text::TokenId>(next[b][0].item<int64_t>()));
    const at::Tensor positions = (batch.lengths + t).unsqueeze(1);
    h = m->hidden_cached(m->embed({next, {}, {}, {}, {}}), model::CachedStep::at(rope, positions), cache.layers());
  }
}

TEST_CASE("batched greedy generation with the KV cache equals recomputing every prompt alone") {
  const auto m = tiny_model();
  const auto prompts = mixed_prompts();
  infer::GenerateOptions o;
  o.max_gen_len = 10;
  auto gen = make_generator(m, o);
  const auto result = gen.generate(prompts);
  REQUIRE(result.generations.size() == 3);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i);
    CHECK(result.generations[i].ids == recompute_greedy(m, prompts[i], 10));
    CHECK(result.generations[i].prompt_ids == prompts[i].ids);
  }
  // Alone in its batch, a prompt gives the same tokens as inside the batch.
  CHECK(gen.generate({prompts[2]}).generations[0].ids == result.generations[2].ids);
  CHECK(result.timing.generated_tokens == 30);
  CHECK(result.timing.prompt_tokens == 27);
}

TEST_CASE("bf16 model: the cache is bf16 and generation runs") {
  auto m = tiny_model();
  m->to(at::kBFloat16);
  infer::KVCache cache(*m, 2, 8);
  CHECK(cache.layer(0).k.scalar_type() == at::kBFloat16);
  CHECK(cache.layer(1).v.sizes() == at::IntArrayRef{2, 2, 8, 16});  // un-repeated GQA heads: 2 of 4
  infer::GenerateOptions o;
  o.max_gen_len = 4;
  CHECK(make_generator(m, o).generate(mixed_prompts()).generations[1].ids.size() == 4);
}

TEST_CASE("sampling: greedy, temperature, top-k and top-p follow PLM's rules") {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor logits = at::log(at::tensor({0.05, 0.5, 0.15, 0.3}, at::kFloat)).unsqueeze(0).repeat({2000, 1});
  auto counts = [&](const infer::SamplingOptions& o) {
    const at::Tensor s = infer::sample_tokens(logits, o, rng);
    return at::bincount(s, {}, 4);
  };
  CHECK(infer::sample_tokens(logits, {}, rng).eq(1).all().item<bool>());  // temperature 0: argmax
  const at::Tensor plain = counts({1.0, {}, {}});
  CHECK((plain > 0).all().item<bool>());
  CHECK(std::abs(plain[1].item<int64_t>() / 2000.0 - 0.5) < 0.05);
  const at::Tensor cold = counts({0.05, {}, {}});  // low temperature sharpens towards the argmax
  CHECK(cold[1].item<int64_t>() > 1990);
  const at::Tensor k2 = counts({1.0, {}, 2});  // only tokens 1 and 3, renormalised: 0.5/0.8 and 0.3/0.8
  CHECK(k2[0].item<int64_t>() + k2[2].item<int64_t>() == 0);
  CHECK(std::abs(k2[1].item<int64_t>() / 2000.0 - 0.625) < 0.05);
  // top-p 0.7: sorted 0.5, 0.3, 0.15, 0.05; exclusive mass 0, 0.5, 0.8, 0.95 -> keep tokens 1 and 3.
  const at::Tensor p7 = counts({1.0, 0.7, {}});
  CHECK(p7[0].item<int64_t>() + p7[2].item<int64_t>() == 0);
  CHECK(p7[3].item<int64_t>() > 0);
  CHECK(counts({1.0, 0.4, 2})[1].item<int64_t>() == 2000);  // top-p wins over top-k, as in PLM
  CHECK_THROWS_AS((infer::SamplingOptions{-1.0, {}, {}}.check()), infer::GenerateError);
  CHECK_THROWS_AS((infer::SamplingOptions{1.0, 1.5, {}}.check()), infer::GenerateError);
  CHECK_THROWS_AS((infer::SamplingOptions{1.0, {}, 0}.check()), infer::GenerateError);
}

TEST_CASE("sampled generation is reproducible from the seed") {
  const auto m = tiny_model();
  infer::GenerateOptions o;
  o.max_gen_len = 5;
  o.sampling = {1.0, {}, 50};  // top-k: no full sort of the vocabulary per step, so the test stays quick
  o.seed = 11;
  const auto a = make_generator(m, o).generate(mixed_prompts());
  const auto b = make_generator(m, o).generate(mixed_prompts());
  o.seed = 12;
  const auto c = make_generator(m, o).generate(mixed_prompts());
  bool differs = false;
  for (size_t i = 0; i < 3; ++i) {
    CHECK(a.generations[i].ids == b.generations[i].ids);
    differs = differs || a.generations[i].ids != c.generations[i].ids;
  }
  CHECK(differs);
}

TEST_CASE("generation stops at a stop token and at a stop string") {
  const auto m = tiny_model();
  const auto prompts = mixed_prompts();
  infer::GenerateOptions o;
  o.max_gen_len = 8;
  const auto free_run = make_generator(m, o).generate(prompts).generations[0];
  REQUIRE(free_run.ids.size() == 8);
  CHECK(free_run.stop == infer::StopReason::max_gen_len);

  // The fourth greedy token made a stop token: the row ends there, the token kept, the other rows go on.
  const auto with_stop =
      make_generator(m, o, std::make_shared<RenamedEot>(llama3(), free_run.ids[3])).generate(prompts);
  CHECK(with_stop.generations[0].ids == std::vector<text::TokenId>(free_run.ids.begin(), free_run.ids.begin() + 4));
  CHECK(with_stop.generations[0].stop == infer::StopReason::stop_token);

  // A stop string: the text of tokens 4 and 5 ends generation once it appears (tokens 0..5 at the latest).
  const auto tok = llama3();
  o.until = {tok->decode({free_run.ids[4], free_run.ids[5]})};
  const auto stopped = make_generator(m, o).generate(prompts).generations[0];
  size_t expected = 1;
  while (tok->decode({free_run.ids.begin(), free_run.ids.begin() + static_cast<std::ptrdiff_t>(expected)})
             .find(o.until[0]) == std::string::npos)
    ++expected;
  CHECK(expected <= 6);
  CHECK(stopped.ids ==
        std::vector<text::TokenId>(free_run.ids.begin(), free_run.ids.begin() + static_cast<std::ptrdiff_t>(expected)));
  CHECK(stopped.stop == infer::StopReason::stop_string);
}

TEST_CASE("continuation scores equal the log-softmax of a full forward") {
  const auto m = tiny_model();
  auto gen = make_generator(m, {});
  const auto prompt = mixed_prompts()[1];  // with an image
  const std::vector<std::vector<text::TokenId>> options{{791, 4320, 374}, {362}, {}, {40, 1541, 1440, 11, 757}};
  const auto scores = gen.score(prompt, options);
  REQUIRE(scores.size() == 4);
  for (size_t i = 0; i < options.size(); ++i) {
    INFO("continuation " << i);
    REQUIRE(scores[i].token_logprobs.size() == options[i].size());
    const at::Tensor lp = at::log_softmax(full_logits(m, prompt, options[i]), -1);
    double sum = 0;
    for (size_t k = 0; k < options[i].size(); ++k) {
      const float want = lp[static_cast<int64_t>(prompt.ids.size() + k - 1)][options[i][k]].item<float>();
      CHECK(scores[i].token_logprobs[k] == Approx(want).margin(1e-4));
      sum += want;
    }
    CHECK(scores[i].sum_logprob == Approx(sum).margin(1e-3));
  }
  // Text continuations are encoded on their own, as PLM encodes each turn.
  const auto by_text = gen.score(infer::Prompt{"Which?", {}, {}}, {"Yes", "No"});
  CHECK(by_text[0].ids == llama3()->encode("Yes"));
}

TEST_CASE("a text-only prompt is the plm_sft generation prompt and has no pixels") {
  const auto m = tiny_model();
  infer::PromptEncoder enc(llama3(), tiny_preprocess(*m));
  const auto p = enc(infer::Prompt{"What is 2+2?", {}, {}});
  CHECK_FALSE(p.pixels.defined());
  CHECK(p.ids ==
        llama3()->encode(text::generation_prompt(text::ConversationFormat::named("plm_sft"), "What is 2+2?", 0, 4)));
  CHECK(p.ids.front() == 128000);
  CHECK_THROWS_AS(enc(infer::Prompt{"x", {"a.png"}, std::string("b.mp4")}), infer::GenerateError);
  CHECK_THROWS_AS(make_generator(m, {}).generate(std::vector<infer::PreparedPrompt>{{{}, {}}}), infer::GenerateError);
}
