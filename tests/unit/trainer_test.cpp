// The training loop: exact resume (at and inside an accumulation window, bf16 + activation checkpointing +
// DropPath), accumulation invariance under global_tokens (DropPath on), the NaN guard, and that a tiny model learns.
#include "torch_catch.h"

#include <cmath>

#include <ATen/Context.h>
#include <torch/csrc/autograd/anomaly_mode.h>

#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/safetensors.h"
#include "plm/config/load.h"
#include "plm/text/tokenizer.h"
#include "plm/train/signals.h"
#include "plm/train/trainer.h"
#include "scratch.h"
#include "test_helpers.h"

using namespace plm;

namespace {

/// A toy dataset: 56x56 PPM images of one colour with pixel noise (solid colours would make the vision tower's
/// CLS and position-embedding gradients sums of cancelling terms, i.e. rounding noise), the colour as the answer,
/// and text-only samples.
void write_toy_data(const Scratch& s) {
  const char* names[] = {"red", "green", "blue"};
  const unsigned char rgb[3][3] = {{255, 0, 0}, {0, 200, 0}, {0, 0, 255}};
  std::string jsonl;
  for (int i = 0; i < 24; ++i) {
    const int c = (i * 7 + i / 3) % 3;
    std::string ppm = "P6\n56 56\n255\n";
    uint32_t noise = 12345u + static_cast<uint32_t>(i);
    for (int p = 0; p < 56 * 56 * 3; ++p) {
      noise = noise * 1664525u + 1013904223u;
      ppm += static_cast<char>(rgb[c][p % 3] * 3 / 4 + (noise >> 26));
    }
    s.write("media/" + std::to_string(i) + ".ppm", ppm);
    jsonl += R"({"image": ")" + std::to_string(i) +
             R"(.ppm", "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, )"
             R"({"from": "assistant", "value": ")" +
             names[c] + "\"}]}\n";
    if (i % 3 == 0)
      jsonl += R"({"conversations": [{"from": "human", "value": "Count to )" + std::to_string(i % 5 + 1) +
               R"("}, {"from": "assistant", "value": "one two three four five"}]})"
               "\n";
  }
  s.write("train.jsonl", jsonl);
  s.write("datasets.yaml", "toy:\n  annotation: " + s.path("train.jsonl") + "\n  root_dir: " + s.path("media") + "\n");
}

config::TrainArgs toy_args(const Scratch& s, const std::string& dump, std::vector<std::string> overrides) {
  std::vector<std::string> base = {"dump_dir=" + s.path(dump),
                                   "steps=4",
                                   "optim.lr=0.002",
                                   "optim.warmup=1",
                                   "logging.freq=1",
                                   "checkpoint.dump.every=2",
                                   "checkpoint.dump.keep=0",
                                   "data.datamix=toy:1",
                                   "data.registry=" + s.path("datasets.yaml"),
                                   "data.tokenizer_path=" PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model",
                                   "data.batch_size=2",
                                   "data.num_workers=2",
                                   "data.image_res=56",
                                   "data.max_num_tiles=1",
                                   "data.vision_input_type=vanilla",
                                   "data.conversation_format=plm_sft",
                                   "model.max_seqlen=96",
                                   "distributed.model_dtype=fp32"};
  base.insert(base.end(), overrides.begin(), overrides.end());
  return config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", base).args;
}

std::map<std::string, at::Tensor> weights(const train::Trainer& t) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, m] : t.parameters()) out[name] = m.detach().clone();
  return out;
}

void require_identical(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    CHECK(at::equal(t, b.at(name)));
  }
}

}  // namespace

TEST_CASE("resume is bit-exact at a step boundary and inside an accumulation window") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  const std::vector<std::string> hard = {"distributed.model_dtype=bf16",
                                         "distributed.full_activation_checkpointing=true",
                                         "model.vision_model.drop_path=0.2",
                                         "model.vision_model.ls_init_value=0.1",
                                         "grad_acc_steps=3",
                                         "steps=5"};
  auto full_args = toy_args(s, "full", hard);
  train::Trainer full(full_args);
  const auto done = full.run();
  CHECK(done.step == 5);
  CHECK_FALSE(done.stopped);
  const auto expected = weights(full);

  for (const auto& [stop_step, stop_acc] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {3, 1}, {1, 2}}) {
    INFO("stopped at step " << stop_step << ", micro-batch " << stop_acc);
    const std::string dump = "cut" + std::to_string(stop_step) + std::to_string(stop_acc);
    {
      train::Trainer first(toy_args(s, dump, hard));
      first.on_micro_batch = [&](int64_t step, int64_t acc) {
        if (step == stop_step && acc == stop_acc) first.request_stop();
      };
      const auto out = first.run();
      CHECK(out.stopped);
      CHECK_FALSE(out.checkpoint.empty());
    }
    train::Trainer second(toy_args(s, dump, hard));  // resumes from dump/checkpoints
    CHECK(second.step() == (stop_acc == 3 ? stop_step + 1 : stop_step));
    const auto out = second.run();
    CHECK(out.step == 5);
    require_identical(expected, weights(second));
  }
}

TEST_CASE("global_tokens: batch 4 x 1, 2 x 2 and 1 x 4 give the same update, DropPath on, no generator drawn") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  // The step's fp32 gradient, read back from the checkpoint: AdamW's first exp_avg = (1 - beta1) g. (Adam's
  // normalised update would turn rounding noise in near-zero gradients into full-size steps.)
  auto gradient = [&](int64_t batch, int64_t acc, const std::string& norm) {
    const std::string dump = norm + std::to_string(batch) + "x" + std::to_string(acc);
    // DropPath masks are a function of each sample's stream slot, so every split draws the same ones.
    train::Trainer t(toy_args(s, dump,
                              {"data.batch_size=" + std::to_string(batch), "grad_acc_steps=" + std::to_string(acc),
                               "steps=1", "optim.loss_normalization=" + norm, "model.vision_model.drop_path=0.3",
                               "model.vision_model.ls_init_value=0.1"}));
    const at::Generator gen = at::detail::getDefaultCPUGenerator();
    const at::Tensor before = gen.get_state();
    const auto out = t.run();
    CHECK(at::equal(gen.get_state(), before));  // a step draws no random numbers from the generator
    std::map<std::string, at::Tensor> g;
    for (const auto& [name, tensor] : ckpt::read_safetensors(out.checkpoint + "/optimizer.safetensors"))
      if (name.size() > 8 && name.substr(name.size() - 8) == ".exp_avg") g[name] = tensor / 0.1;
    return g;
  };
  const auto a = gradient(4, 1, "global_tokens"), b = gradient(2, 2, "global_tokens"),
             c = gradient(1, 4, "global_tokens"), r = gradient(1, 4, "reference");
  REQUIRE(a.size() > 50);
  // Differences relative to the largest gradient entry: tensors whose gradient is a sum of cancelling per-sample
  // terms (the vision position embedding on solid-colour images) carry rounding noise of that size.
  double scale = 0;
  for (const auto& [name, g] : a) scale = std::max(scale, g.abs().max().item<double>());
  double worst = 0, reference_worst = 0;
  for (const auto& [name, g] : a) {
    INFO(name);
    for (const auto* other : {&b, &c}) {
      REQUIRE(other->count(name));
      worst = std::max(worst, (g - other->at(name)).abs().max().item<double>() / scale);
    }
    reference_worst = std::max(reference_worst, (g - r.at(name)).abs().max().item<double>() / scale);
  }
  CHECK(worst < 1e-5);
  // PLM's reference normalisation weighs micro-batches, not tokens: with unequal loss tokens it differs.
  CHECK(reference_worst > 1e-2);
}

TEST_CASE("model.vocab_size -1 takes the tokenizer's size and any other size is refused before training") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  const int64_t n_words = text::load_tokenizer(PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model")->vocab_size();
  {
    train::Trainer t(toy_args(s, "filled", {"model.vocab_size=-1", "steps=1"}));
    CHECK(weights(t).at("tok_embeddings.weight").size(0) == n_words);
    const auto out = t.run();
    CHECK(ckpt::read_model_args(out.checkpoint).vocab_size == n_words);
    CHECK(config::load_config(s.path("filled/config.yaml")).args.model.vocab_size == n_words);
  }
  for (const int64_t wrong : {n_words + 1, n_words - 1, n_words + 64}) {
    const std::string msg = error_of<config::ConfigError>(
        [&] { train::Trainer(toy_args(s, "wrong", {"model.vocab_size=" + std::to_string(wrong)})); });
    CHECK_THAT(msg, Catch::Contains("model.vocab_size is " + std::to_string(wrong)));
    CHECK_THAT(msg, Catch::Contains(std::to_string(n_words) + " tokens"));
  }
}

TEST_CASE("matmul_allow_tf32, detect_anomaly, show_first_batch and dp_shard act as PLM's keys do") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  for (const bool tf32 : {true, false}) {
    train::Trainer t(toy_args(s, "tf32", {"distributed.matmul_allow_tf32=" + std::string(tf32 ? "true" : "false")}));
    CHECK(at::globalContext().allowTF32CuBLAS() == tf32);
  }
  {  // the first batch, decoded on rank 0, image and padding runs shortened
    train::Trainer t(toy_args(s, "shown", {"data.show_first_batch=true", "steps=1"}));
    t.run();
    std::ifstream in(s.path("shown/train.log"));
    const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_THAT(log, Catch::Contains("Input text: \n<|begin_of_text|>"));
    CHECK_THAT(log, Catch::Matches("(.|\n)*<\\|image\\|>\\.\\.x[0-9]+(.|\n)*"));
    CHECK_THAT(log, Catch::Contains("Label text: \n"));
    CHECK_THAT(log, Catch::Matches("(.|\n)*<\\|end_of_text\\|>\\.\\.x[0-9]+(.|\n)*"));
    CHECK(log.find("Input text:") == log.rfind("Input text:"));  // once
  }
  {  // anomaly mode names the backward op that produced the first NaN, before the NaN guard sees the loss
    std::string msg;
    try {
      train::Trainer t(toy_args(s, "anomaly", {"distributed.detect_anomaly=true", "optim.lr=1e30", "optim.warmup=0",
                                               "optim.scheduler=constant", "optim.clip=0", "steps=4"}));
      t.run();
    } catch (const std::exception& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Catch::Contains("returned nan values"));
    torch::autograd::AnomalyMode::set_enabled(false);
  }
  const std::string hsdp = error_of<config::ConfigError>(
      [&] { train::Trainer(toy_args(s, "hsdp", {"distributed.dp_shard=2", "distributed.fsdp_type=full_shard"})); });
  CHECK_THAT(hsdp, Catch::Contains("distributed.dp_shard is 2 on 1 ranks"));
  CHECK_THAT(hsdp, Catch::Contains("HSDP"));
}

TEST_CASE("a non-finite loss aborts naming the step and samples, or is skipped") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  // An enormous learning rate overflows the weights after the first real update.
  const std::vector<std::string> blow_up = {"optim.lr=1e30", "optim.warmup=0", "optim.scheduler=constant",
                                            "optim.clip=0", "steps=4"};
  train::Trainer abort(toy_args(s, "abort", blow_up));
  try {
    abort.run();
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("step 2") || Catch::Contains("step 3"));
    CHECK_THAT(what, Catch::Contains("toy#"));
    CHECK_THAT(what, Catch::Contains("nan_policy"));
  }
  auto skip_args = toy_args(s, "skip", blow_up);
  skip_args.optim.nan_policy = config::NanPolicy::skip;
  train::Trainer skip(skip_args);
  CHECK(skip.run().step == 4);
}

TEST_CASE("the tiny model learns the toy task and frozen parts stay put") {
  Scratch s("plm_trainer");
  write_toy_data(s);
  auto args = toy_args(s, "learn", {"steps=30", "optim.lr=0.003", "optim.warmup=3", "checkpoint.dump.every=100"});
  train::Trainer t(args);
  const auto before = weights(t);
  t.run();
  std::ifstream metrics(s.path("learn/metrics.jsonl"));
  std::vector<double> losses;
  for (std::string line; std::getline(metrics, line);) {
    const auto at = line.find("\"loss/out\":");
    REQUIRE(at != std::string::npos);
    losses.push_back(std::stod(line.substr(at + 11)));
  }
  REQUIRE(losses.size() == 30);
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[27] + losses[28] + losses[29]) / 3;
  CHECK(last < 0.5 * first);

  // Stage 1 freezing: only the projector moves.
  train::Trainer frozen(
      toy_args(s, "frozen",
               {"model.freeze_language_model=true", "model.freeze_vision_model=true", "optim.warmup=0", "steps=2"}));
  const auto start = weights(frozen);
  frozen.run();
  const auto end = weights(frozen);
  for (const auto& [name, w] : start) {
    INFO(name);
    CHECK(at::equal(w, end.at(name)) == (name.rfind("vision_projector.", 0) != 0));
  }
  (void)before;
}
