// Generation speed with random weights: prefill and decode tokens/s of infer::Generator for a model YAML's
// decoder (the vision tower is left out: decode speed does not depend on it), greedy, batch of random prompts.
// Paired with bench/generate_bench.sh.
#include <iostream>
#include <string>

#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/config/load.h"
#include "plm/infer/generate.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: generate_bench MODEL_YAML TOKENIZER [fp32|bf16] [batch] [prompt_len] [gen_len]\n";
    return 2;
  }
  using namespace plm;
  const std::string dtype = argc > 3 ? argv[3] : "fp32";
  const int64_t batch = argc > 4 ? std::atoll(argv[4]) : 1;
  const int64_t prompt_len = argc > 5 ? std::atoll(argv[5]) : 64;
  const int64_t gen_len = argc > 6 ? std::atoll(argv[6]) : 32;
  const int threads = runtime::configure_threads();

  config::TrainArgs args;
  args.model = config::load_config(argv[1]).args.model;
  args.model.vision_model.reset();
  at::manual_seed(0);
  model::PerceptionLM m(args.model, at::TensorOptions().dtype(dtype == "bf16" ? at::kBFloat16 : at::kFloat));
  {
    at::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.normal_(0.0, 0.02);  // random weights: init.h's draws would only cost time
  }
  m->eval();
  infer::GenerateOptions o;
  o.max_gen_len = gen_len;
  infer::Generator gen(m, infer::PromptEncoder(text::load_tokenizer(argv[2]), data::PreprocessOptions::from(args)), o);

  std::vector<infer::PreparedPrompt> prompts;
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor ids = at::randint(0, 128000, {prompt_len}, at::kLong);
    prompts.push_back({std::vector<text::TokenId>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + prompt_len), {}});
  }
  gen.generate({prompts.front()});  // warm-up (allocator, thread pool)
  const infer::GenerationTiming t = gen.generate(prompts).timing;
  const auto& d = m->dims;
  std::cout << "model " << argv[1] << " (dim " << d.dim << ", " << d.n_layers << " layers) " << dtype << " threads "
            << threads << " batch " << batch << ": prefill " << t.prompt_tokens << " tokens "
            << fmt::format("{:.3f}", t.prefill_s) << " s (" << fmt::format("{:.1f}", t.prompt_tokens / t.prefill_s)
            << " tokens/s), decode " << t.decode_tokens << " tokens " << fmt::format("{:.3f}", t.decode_s) << " s ("
            << fmt::format("{:.2f}", t.decode_tokens_per_s()) << " tokens/s)\n";
  return 0;
}
