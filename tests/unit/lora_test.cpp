// LoRA adapters (model/lora.h): which linears get one, PEFT's shapes and init, that a fresh adapter changes nothing
// (training forward, loss and cached generation alike), that the update is exactly scale * B A (the merged weights'
// forward), that only adapters train, that activation checkpointing recomputes them, merge_lora's refusals, and that
// adapter dropout's masks are keyed (replayed by a recomputation, per row, training only).
#include "torch_catch.h"

#include "model_batches.h"

#include <map>
#include <set>

#include "plm/config/load.h"
#include "plm/model/init.h"
#include "plm/model/lora.h"
#include "plm/model/model_inputs.h"
#include "plm/model/perception_lm.h"

using namespace plm;

namespace {

config::ModelArgs tiny(const std::vector<std::string>& overrides = {}) {
  std::vector<std::string> o{"model.vocab_size=1000"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  return config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", o).args.model;
}

// The LoRA model with the base model's weights (adapters as init_lora leaves them unless `random_b`).
model::PerceptionLM with_adapters(const model::PerceptionLMImpl& base, const std::string& overrides, bool random_b) {
  std::vector<std::string> o{"model.lora.targets=" + overrides};
  model::PerceptionLM m(tiny({o}));
  model::init_all(*m);
  at::NoGradGuard no_grad;
  const auto params = base.named_parameters();
  for (auto& p : m->named_parameters()) {
    if (model::is_lora_parameter(p.key())) {
      if (random_b && p.key().find(".lora_B.") != std::string::npos) p.value().normal_(0, 0.05);
      continue;
    }
    p.value().copy_(params[p.key()]);
  }
  return m;
}

std::set<std::string> adapted(const model::PerceptionLMImpl& m) {
  std::set<std::string> out;
  for (const auto& p : m.named_parameters())
    if (model::is_lora_parameter(p.key())) out.insert(p.key().substr(0, p.key().size() - 14));  // ".lora_A.weight"
  return out;
}

}  // namespace

TEST_CASE("LoRA targets: suffixes at dots, whole-name globs, and a pattern that matches nothing is refused") {
  const auto base = tiny();
  const int64_t layers = base.n_layers, blocks = base.vision_model->layers;
  auto count = [](const std::string& targets) {
    model::PerceptionLM m(tiny({"model.lora.targets=" + targets}), at::TensorOptions().device(at::kMeta));
    return static_cast<int64_t>(adapted(*m).size());
  };
  CHECK(count("wq") == layers);
  CHECK(count("attention.wq") == layers);
  CHECK(count("layers.0.attention.wq") == 1);
  CHECK(count("wq,wk,wv,wo,w1,w2,w3") == 7 * layers);
  CHECK(count("layers.*.feed_forward.w?") == 3 * layers);
  CHECK(count("in_proj,out_proj,c_fc,c_proj") == 4 * blocks);
  CHECK(count("vision_projector.projector.0, vision_projector.projector.2") == 2);
  CHECK(count("all") == 7 * layers + 4 * blocks + 2);  // every linear, the packed in_proj included
  for (const std::string bad : {"q", "attention", "wq.weight", "layers.999.attention.wq"}) {
    INFO(bad);
    CHECK_THROWS_WITH(model::PerceptionLM(tiny({"model.lora.targets=wq," + bad})),
                      Catch::Contains("model.lora.targets") && Catch::Contains("'" + bad + "'"));
  }
  CHECK_THROWS_WITH(model::lora_target_patterns("wq,,wv"), Catch::Contains("empty pattern"));
}

TEST_CASE("LoRA adapters have PEFT's shapes and init, and only they train") {
  for (const int64_t rank : {1, 3, 8}) {
    INFO("rank " << rank);
    model::PerceptionLM m(tiny({"model.lora.rank=" + std::to_string(rank), "model.lora.targets=all"}));
    model::init_all(*m);
    const auto params = m->named_parameters();
    int64_t adapters = 0;
    for (const std::string& host : adapted(*m)) {
      INFO(host);
      const at::Tensor a = params[host + ".lora_A.weight"], b = params[host + ".lora_B.weight"];
      const at::Tensor w = params[model::lora_base_weight(host + ".lora_A.weight")];
      REQUIRE(a.sizes() == at::IntArrayRef({rank, w.size(1)}));
      REQUIRE(b.sizes() == at::IntArrayRef({w.size(0), rank}));
      CHECK(at::equal(b, at::zeros_like(b)));
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
      CHECK(a.abs().max().item<double>() <= bound);
      CHECK(a.abs().max().item<double>() > bound / 4);  // drawn, not zero
      adapters += a.numel() + b.numel();
    }
    // Same seed, same adapters; another seed, others.
    model::PerceptionLM again(tiny({"model.lora.rank=" + std::to_string(rank), "model.lora.targets=all"}));
    model::init_all(*again);
    model::PerceptionLM other(
        tiny({"model.lora.rank=" + std::to_string(rank), "model.lora.targets=all", "model.seed=7"}));
    model::init_all(*other);
    const std::string first = *adapted(*m).begin() + ".lora_A.weight";
    CHECK(at::equal(again->named_parameters()[first], params[first]));
    CHECK_FALSE(at::equal(other->named_parameters()[first], params[first]));

    m->train();
    m->apply_freezing();
    const model::ParameterCounts c = model::count_parameters(*m);
    CHECK(c.adapters == adapters);
    CHECK(c.trainable == adapters);
    for (const auto& p : m->named_parameters()) CHECK(p.value().requires_grad() == model::is_lora_parameter(p.key()));
  }
}

TEST_CASE("a fresh adapter changes nothing: forward, loss and cached generation equal the base model's exactly") {
  at::manual_seed(5);
  model::PerceptionLM base(tiny());
  model::init_all(*base);
  base->eval();
  for (const std::string targets : {"all", "wq,wv", "in_proj,vision_projector.projector.2,w2"}) {
    INFO(targets);
    model::PerceptionLM m = with_adapters(*base, targets, /*random_b=*/false);
    m->eval();
    const model::ModelInputs in = text_and_image_batch(*base, 24, 2);
    CHECK(at::equal(m->forward(in), base->forward(in)));
    const at::Tensor targets_ids = at::randint(0, 1000, {2, 24}, at::kLong), mask = at::rand({2, 24}) > 0.3;
    CHECK(at::equal(m->loss(in, targets_ids, mask), base->loss(in, targets_ids, mask)));
    // Cached generation: a prefill of the embedded prompt through every block's cached attention.
    at::InferenceMode guard;
    auto cache = [&](const model::PerceptionLMImpl& model) {
      const auto& d = model.dims;
      std::vector<model::KVCacheLayer> c(d.n_layers);
      for (auto& l : c)
        l = {at::zeros({2, d.n_kv_heads, 32, d.head_dim}), at::zeros({2, d.n_kv_heads, 32, d.head_dim})};
      return c;
    };
    auto c0 = cache(*base), c1 = cache(*m);
    const model::RopeTable rope = model::decoder_rope(base->rope_frequencies, 32);
    const auto step = model::CachedStep::prefill(rope, 2, 24);
    CHECK(at::equal(m->hidden_cached(m->embed(in), step, c1), base->hidden_cached(base->embed(in), step, c0)));
  }
}

TEST_CASE(
    "an adapter's update is scale * B A: the forward equals the merged weights' and only adapters get gradients") {
  at::manual_seed(9);
  model::PerceptionLM base(tiny());
  model::init_all(*base);
  for (const std::string alpha : {"16", "3.5"}) {
    INFO("alpha " << alpha);
    std::vector<std::string> o{"model.lora.targets=all", "model.lora.rank=4", "model.lora.alpha=" + alpha};
    model::PerceptionLM m(tiny(o));
    model::init_all(*m);
    {
      at::NoGradGuard no_grad;
      const auto params = base->named_parameters();
      for (auto& p : m->named_parameters()) {
        if (!model::is_lora_parameter(p.key()))
          p.value().copy_(params[p.key()]);
        else if (p.key().find(".lora_B.") != std::string::npos)
          p.value().normal_(0, 0.05);
      }
    }
    NamedTensors tensors;
    for (const auto& p : m->named_parameters()) tensors.emplace_back(p.key(), p.value().detach());
    const NamedTensors merged = model::merge_lora(tensors, std::stod(alpha) / 4.0);
    model::PerceptionLM folded(tiny());
    {
      at::NoGradGuard no_grad;
      const auto params = folded->named_parameters();
      REQUIRE(merged.size() == params.size());
      for (const auto& [name, t] : merged) params[name].copy_(t);
    }
    m->eval();
    folded->eval();
    const model::ModelInputs in = text_and_image_batch(*base, 24, 2);
    const at::Tensor y = m->forward(in), want = folded->forward(in), plain = base->forward(in);
    const double scale = want.abs().max().item<double>();
    CHECK((y - want).abs().max().item<double>() <= 2e-5 * scale);
    CHECK((y - plain).abs().max().item<double>() > 1e-3 * scale);  // the adapters do act

    m->train();
    m->apply_freezing();
    m->loss(in, at::randint(0, 1000, {2, 24}, at::kLong), at::ones({2, 24}, at::kBool)).backward();
    for (const auto& p : m->named_parameters()) {
      INFO(p.key());
      CHECK(p.value().grad().defined() == model::is_lora_parameter(p.key()));
    }
  }
  // PEFT's init: with B = 0 the A matrices receive exactly zero gradient, B ones do not.
  model::PerceptionLM fresh(tiny({"model.lora.targets=wq,wo"}));
  model::init_all(*fresh);
  fresh->train();
  fresh->apply_freezing();
  const model::ModelInputs in = text_and_image_batch(*fresh, 24, 2);
  fresh->loss(in, at::randint(0, 1000, {2, 24}, at::kLong), at::ones({2, 24}, at::kBool)).backward();
  for (const auto& p : fresh->named_parameters()) {
    if (!model::is_lora_parameter(p.key())) continue;
    INFO(p.key());
    const bool is_a = p.key().find(".lora_A.") != std::string::npos;
    CHECK((p.value().grad().abs().max().item<double>() == 0.0) == is_a);
  }
}

TEST_CASE("merge_lora refuses an adapter without its partner, its base weight, or with the wrong shape") {
  NamedTensors t{{"layers.0.attention.wq.weight", at::randn({6, 4})},
                 {"layers.0.attention.wq.lora_A.weight", at::randn({2, 4})},
                 {"layers.0.attention.wq.lora_B.weight", at::randn({6, 2})},
                 {"vision_model.transformer.resblocks.0.attn.in_proj_weight", at::randn({9, 3})},
                 {"vision_model.transformer.resblocks.0.attn.in_proj.lora_A.weight", at::randn({2, 3})},
                 {"vision_model.transformer.resblocks.0.attn.in_proj.lora_B.weight", at::randn({9, 2})}};
  const NamedTensors merged = model::merge_lora(t, 0.5);
  REQUIRE(merged.size() == 2);
  CHECK(at::allclose(merged[0].second, t[0].second + 0.5 * at::mm(t[2].second, t[1].second)));
  CHECK(merged[1].first == "vision_model.transformer.resblocks.0.attn.in_proj_weight");
  CHECK(at::allclose(merged[1].second, t[3].second + 0.5 * at::mm(t[5].second, t[4].second)));
  auto without = [&](size_t i) {
    NamedTensors c = t;
    c.erase(c.begin() + static_cast<std::ptrdiff_t>(i));
    return c;
  };
  CHECK_THROWS_WITH(model::merge_lora(without(2), 1.0), Catch::Contains("layers.0.attention.wq.lora_B.weight"));
  CHECK_THROWS_WITH(model::merge_lora(without(1), 1.0), Catch::Contains("layers.0.attention.wq.lora_A.weight"));
  CHECK_THROWS_WITH(model::merge_lora(without(0), 1.0), Catch::Contains("layers.0.attention.wq.weight"));
  NamedTensors wrong = t;
  wrong[2].second = at::randn({5, 2});
  CHECK_THROWS_WITH(model::merge_lora(wrong, 1.0), Catch::Contains("do not fit"));
}

TEST_CASE("activation checkpointing recomputes the adapters: the same loss and adapter gradients as the plain graph") {
  at::manual_seed(13);
  model::PerceptionLM m(tiny({"model.lora.targets=all", "model.lora.rank=3"}));
  model::init_all(*m);
  {
    at::NoGradGuard no_grad;
    for (auto& p : m->named_parameters())
      if (p.key().find(".lora_B.") != std::string::npos) p.value().normal_(0, 0.05);
  }
  m->train();
  m->apply_freezing();
  const model::ModelInputs in = text_and_image_batch(*m, 24, 2);
  const at::Tensor targets = at::randint(0, 1000, {2, 24}, at::kLong), mask = at::rand({2, 24}) > 0.3;
  const auto plain = loss_and_gradients(*m, in, targets, mask, false);
  const auto ac = loss_and_gradients(*m, in, targets, mask, true);
  CHECK(plain.first == ac.first);
  REQUIRE(plain.second.size() == ac.second.size());
  CHECK(plain.second.size() == adapted(*m).size() * 2);
  for (const auto& [name, g] : plain.second) {
    INFO(name);
    REQUIRE(ac.second.count(name));
    CHECK(at::allclose(g, ac.second.at(name), 1e-5, 1e-7));
  }
}

TEST_CASE("LoRA dropout masks: rate p, scaled by 1 / (1 - p), a function of (row key, block, call) only") {
  at::manual_seed(17);
  const at::Tensor x = at::rand({4, 500, 64}) + 0.5;
  for (const double p : {0.1, 0.5}) {
    INFO("p " << p);
    const std::vector<uint64_t> keys = {3, 1, 4, 1};  // rows 1 and 3 share a key: they draw the same mask
    at::Tensor first, second;
    {
      model::LoraDropoutScope scope(keys, 7);
      first = model::LoraDropoutScope::drop(x, p);
      second = model::LoraDropoutScope::drop(x, p);
    }
    const at::Tensor dropped = first.eq(0);
    CHECK(std::abs(dropped.to(at::kDouble).mean().item<double>() - p) < 0.01);
    CHECK(at::allclose(first.masked_select(dropped.logical_not()), (x / (1 - p)).masked_select(dropped.logical_not())));
    CHECK(at::equal(dropped[1], dropped[3]));
    CHECK_FALSE(at::equal(dropped[0], dropped[1]));
    CHECK_FALSE(at::equal(second.eq(0), dropped));  // the block's next call draws another mask
    {
      model::LoraDropoutScope again(keys, 7);  // a recomputation of the block: the same masks again
      CHECK(at::equal(model::LoraDropoutScope::drop(x, p), first));
      CHECK(at::equal(model::LoraDropoutScope::drop(x, p), second));
    }
    {
      const std::vector<uint64_t> one = {keys[2]};  // a row alone, as another rank would run it
      model::LoraDropoutScope alone(one, 7);
      CHECK(at::equal(model::LoraDropoutScope::drop(x.slice(0, 2, 3), p), first.slice(0, 2, 3)));
    }
    {
      model::LoraDropoutScope other_block(keys, 8);
      CHECK_FALSE(at::equal(model::LoraDropoutScope::drop(x, p).eq(0), dropped));
    }
    model::LoraDropoutScope wrong(std::vector<uint64_t>{1, 2}, 7);
    CHECK_THROWS(model::LoraDropoutScope::drop(x, p));
  }
}

TEST_CASE("LoRA dropout in the model: replayed by activation checkpointing, per row, training only") {
  at::manual_seed(19);
  const std::vector<std::string> o = {"model.lora.targets=all", "model.lora.rank=3"};
  model::PerceptionLM m(tiny({o[0], o[1], "model.lora.dropout=0.3"})), no_dropout(tiny(o));
  model::init_all(*m);
  {
    at::NoGradGuard no_grad;
    for (auto& p : m->named_parameters())
      if (p.key().find(".lora_B.") != std::string::npos) p.value().normal_(0, 0.05);
    const auto src = m->named_parameters();
    for (auto& p : no_dropout->named_parameters()) p.value().copy_(src[p.key()]);
  }
  for (auto* model : {&m, &no_dropout}) {
    (*model)->train();
    (*model)->apply_freezing();
  }
  model::ModelInputs in = text_and_image_batch(*m, 24, 2);
  in.row_keys = {21, 22};
  in.drop_path_keys = {31, 32};
  const at::Tensor targets = at::randint(0, 1000, {2, 24}, at::kLong), mask = at::rand({2, 24}) > 0.3;
  const auto plain = loss_and_gradients(*m, in, targets, mask, false);
  const auto ac = loss_and_gradients(*m, in, targets, mask, true);
  CHECK(plain.first == ac.first);
  REQUIRE(plain.second.size() == ac.second.size());
  for (const auto& [name, g] : plain.second) {
    INFO(name);
    CHECK(at::allclose(g, ac.second.at(name), 1e-5, 1e-7));
  }
  // Dropout acts in training, and only there.
  const double without = loss_and_gradients(*no_dropout, in, targets, mask, false).first;
  CHECK(std::abs(plain.first - without) > 1e-6 * std::abs(without));
  at::NoGradGuard no_grad;
  const at::Tensor logits = m->forward(in);
  // A row's masks follow its key, wherever the row sits: swapping the rows (and their images and keys) swaps the
  // logits; another key for row 0 changes row 0 only.
  model::ModelInputs swapped = in;
  swapped.tokens = in.tokens.flip(0);
  swapped.images = in.images.flip(0);
  swapped.row_keys = {22, 21};
  swapped.drop_path_keys = {32, 31};
  CHECK(at::allclose(m->forward(swapped), logits.flip(0), 1e-5, 1e-6));
  model::ModelInputs rekeyed = in;
  rekeyed.row_keys = {99, 22};
  const at::Tensor other = m->forward(rekeyed);
  CHECK(at::allclose(other[1], logits[1], 1e-5, 1e-6));
  CHECK_FALSE(at::allclose(other[0], logits[0], 1e-5, 1e-6));
  m->eval();
  no_dropout->eval();
  CHECK(at::equal(m->forward(in), no_dropout->forward(in)));
}
