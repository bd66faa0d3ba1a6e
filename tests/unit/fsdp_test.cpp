// Fully sharded data parallel on one rank (the multi-rank equivalence runs in tests/e2e/cli_dist_train.sh): the
// sharded model computes the plain model's loss and gradients bit for bit in fp32 (the per-unit recomputation adds
// no error), in bf16 within rounding; frozen units get no gradient; the units cover every parameter; a LoRA model's
// units split into a frozen base buffer (held in the compute dtype) and a trainable adapter buffer.
#include "torch_catch.h"

#include <algorithm>
#include <map>
#include <set>
#include "plm/config/load.h"

#include "plm/dist/fsdp.h"
#include "plm/model/init.h"
#include "plm/model/lora.h"
#include "plm/model/units.h"

using namespace plm;

namespace {

config::ModelArgs tiny(const std::vector<std::string>& overrides = {}) {
  std::vector<std::string> o = {"model.vocab_size=300", "model.vision_model.ls_init_value=0.1"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  return config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", o).args.model;
}

struct Batch {
  model::ModelInputs in;
  at::Tensor targets, mask;
};

Batch batch(const config::ModelArgs& a) {
  const int64_t r = a.vision_model->image_size, tokens_per_image = 4, seqlen = 16;
  Batch b;
  b.in.tokens = at::randint(0, 300, {2, seqlen}, at::kLong);
  b.in.images = at::randn({2, 3, r, r});
  b.in.image_mask = at::zeros({2, seqlen}, at::kBool);
  b.in.image_mask.slice(1, 2, 2 + tokens_per_image).fill_(true);
  b.targets = at::randint(0, 300, {2, seqlen}, at::kLong);
  b.mask = at::rand({2, seqlen}) > 0.3;
  return b;
}

/// The plain model's gradients flattened in the sharded layout's order.
at::Tensor flat_gradient(const model::PerceptionLMImpl& m, const dist::UnitLayout& unit) {
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : m.named_parameters()) grads[p.key()] = p.value().grad();
  std::vector<at::Tensor> parts;
  for (const auto& p : unit.parameters) parts.push_back(grads.at(p.name).reshape({-1}));
  return at::cat(parts);
}

}  // namespace

TEST_CASE("units: every parameter belongs to one of PLM's units") {
  CHECK(model::unit_of("layers.12.attention.wq.weight") == "layers.12");
  CHECK(model::unit_of("vision_model.transformer.resblocks.3.ln_1.weight") == "vision_model.transformer.resblocks.3");
  CHECK(model::unit_of("vision_model.conv1.weight") == "vision_model");
  CHECK(model::unit_of("vision_model.ln_post.bias") == "vision_model");
  CHECK(model::unit_of("vision_projector.projector.0.weight") == "vision_projector");
  CHECK(model::unit_of("tok_embeddings.weight") == "tok_embeddings");
  CHECK(model::unit_of("norm.weight") == "norm");
  CHECK(model::unit_of("output.weight") == "output");
}

TEST_CASE("one-rank full_shard gives the plain model's loss and gradients exactly (fp32, tied and untied)") {
  for (const bool tied : {true, false}) {
    const config::ModelArgs args = tiny({tied ? "model.weight_tying=true" : "model.weight_tying=false"});
    at::manual_seed(1);
    model::PerceptionLM plain(args), sharded(args);
    model::init_all(*plain);
    {
      at::NoGradGuard no_grad;
      auto src = plain->named_parameters();
      for (auto& p : sharded->named_parameters()) p.value().copy_(src[p.key()]);
    }
    const Batch b = batch(args);
    const at::Tensor want = plain->loss(b.in, b.targets, b.mask);
    want.backward();

    dist::World world(dist::LaunchEnv{});
    dist::ShardedModel fsdp(*sharded, world, at::kFloat);
    // The model's parameters are empty between units; the units cover them all.
    int64_t covered = 0;
    for (const auto& u : fsdp.layout().units) covered += u.numel;
    CHECK(covered == model::count_parameters(*plain).total);
    for (const auto& p : sharded->parameters()) CHECK(p.numel() == 0);

    const at::Tensor got = sharded->loss(b.in, b.targets, b.mask);
    CHECK(got.item<float>() == want.item<float>());
    got.backward();
    for (size_t i = 0; i < fsdp.layout().units.size(); ++i) {
      const auto& [name, shard] = fsdp.shards()[i];
      INFO(name);
      REQUIRE(shard.grad().defined());
      CHECK(at::equal(shard.grad(), flat_gradient(*plain, fsdp.layout().units[i])));
    }
    // full_parameters() gives back the plain model's values by name.
    auto src = plain->named_parameters();
    for (const auto& [name, t] : fsdp.full_parameters()) CHECK(at::equal(t, src[name]));
    // Without autograd (validation, generation) units run plainly.
    at::NoGradGuard no_grad;
    CHECK(at::equal(sharded->forward(b.in), plain->forward(b.in)));
  }
}

TEST_CASE("one-rank full_shard in bf16: the plain bf16 model's loss, and frozen units get no gradient") {
  const config::ModelArgs args = tiny({"model.freeze_language_model=true"});
  at::manual_seed(2);
  model::PerceptionLM plain(args), sharded(args);
  model::init_all(*plain);
  {
    at::NoGradGuard no_grad;
    auto src = plain->named_parameters();
    for (auto& p : sharded->named_parameters()) p.value().copy_(src[p.key()]);
  }
  plain->train();
  sharded->train();
  plain->apply_freezing();
  sharded->apply_freezing();
  plain->to(at::kBFloat16);
  const Batch b = batch(args);
  const at::Tensor want = plain->loss(b.in, b.targets, b.mask);
  dist::World world(dist::LaunchEnv{});
  dist::ShardedModel fsdp(*sharded, world, at::kBFloat16);
  const at::Tensor got = sharded->loss(b.in, b.targets, b.mask);
  CHECK(got.item<float>() == Approx(want.item<float>()).epsilon(1e-6));
  got.backward();
  for (const auto& [name, shard] : fsdp.shards()) {
    INFO(name);
    const bool decoder = name.rfind("vision", 0) != 0;
    CHECK(shard.requires_grad() == !decoder);
    CHECK(shard.grad().defined() == !decoder);
  }
  CHECK(fsdp.trainable_shards().size() == 1 + 2 + 1);  // vision stem, 2 blocks, projector
}

TEST_CASE(
    "one-rank full_shard LoRA: a unit's base and adapters are two buffers, the plain model's loss and gradients") {
  // With adapter dropout the masks must replay in the sharded backward's recomputation (model/lora.h).
  for (const std::string dropout : {"0", "0.3"}) {
    INFO("dropout " << dropout);
    const config::ModelArgs args =
        tiny({"model.lora.targets=all", "model.lora.rank=3", "model.lora.dropout=" + dropout});
    at::manual_seed(3);
    model::PerceptionLM plain(args);
    model::init_all(*plain);
    {
      at::NoGradGuard no_grad;
      for (auto& p : plain->named_parameters())
        if (p.key().find(".lora_B.") != std::string::npos) p.value().normal_(0, 0.05);  // adapters that act
    }
    Batch b = batch(args);
    b.in.row_keys = {1, 2};
    b.in.drop_path_keys = {3, 4};
    for (const at::ScalarType compute : {at::kFloat, at::kBFloat16}) {
      INFO(c10::toString(compute));
      model::PerceptionLM reference(args), sharded(args);
      {
        at::NoGradGuard no_grad;
        auto src = plain->named_parameters();
        for (auto* m : {&reference, &sharded})
          for (auto& p : (*m)->named_parameters()) p.value().copy_(src[p.key()]);
      }
      for (auto* m : {&reference, &sharded}) {
        (*m)->train();
        (*m)->apply_freezing();
      }
      reference->to(compute);
      const at::Tensor want = reference->loss(b.in, b.targets, b.mask);
      want.backward();

      dist::World world(dist::LaunchEnv{});
      dist::ShardedModel fsdp(*sharded, world, compute);
      // Each buffer is all adapters (trainable, "<unit>.trainable" beside its unit's frozen "<unit>") or all base.
      std::map<std::string, const dist::UnitLayout*> by_name;
      int64_t frozen = 0, trainable = 0;
      for (const auto& u : fsdp.layout().units) by_name[u.name] = &u;
      for (const auto& u : fsdp.layout().units) {
        INFO(u.name);
        for (const auto& p : u.parameters) CHECK(model::is_lora_parameter(p.name) == u.trainable);
        (u.trainable ? trainable : frozen) += u.numel;
        if (!u.trainable) continue;
        const std::string unit = model::unit_of(u.parameters.front().name);
        CHECK(u.name == unit + dist::kTrainableSuffix);
        REQUIRE(by_name.count(unit));
        std::set<std::string> base;
        for (const auto& p : by_name.at(unit)->parameters) base.insert(p.name);
        for (const auto& p : u.parameters) CHECK(base.count(model::lora_base_weight(p.name)) == 1);
      }
      CHECK(trainable == model::count_parameters(*plain).adapters);
      CHECK(frozen + trainable == model::count_parameters(*plain).total);
      // The base is held in the compute dtype, the adapters in fp32.
      const dist::ShardedModel::Footprint f = fsdp.footprint();
      CHECK(f.shard_bytes == frozen * at::elementSize(compute) + trainable * 4);

      const at::Tensor got = sharded->loss(b.in, b.targets, b.mask);
      if (compute == at::kFloat)
        CHECK(got.item<float>() == want.item<float>());
      else
        CHECK(got.item<float>() == Approx(want.item<float>()).epsilon(1e-6));
      got.backward();
      for (size_t i = 0; i < fsdp.layout().units.size(); ++i) {
        const auto& unit = fsdp.layout().units[i];
        const at::Tensor& shard = fsdp.shards()[i].second;
        INFO(unit.name);
        CHECK(shard.scalar_type() == (unit.trainable ? at::kFloat : compute));
        REQUIRE(shard.grad().defined() == unit.trainable);
        if (!unit.trainable) continue;
        const at::Tensor expected = flat_gradient(*reference, unit).to(at::kFloat);
        if (compute == at::kFloat)
          CHECK(at::equal(shard.grad(), expected));
        else
          CHECK(at::allclose(shard.grad(), expected, 1e-2, 1e-4));
      }
      CHECK(fsdp.trainable_shards().size() ==
            static_cast<size_t>(std::count_if(fsdp.layout().units.begin(), fsdp.layout().units.end(),
                                              [](const dist::UnitLayout& u) { return u.trainable; })));
      auto src = plain->named_parameters();
      for (const auto& [name, t] : fsdp.full_parameters()) {  // the base as held (rounded), the adapters' fp32 masters
        const at::Tensor& p = src[name];
        CHECK(at::equal(t, model::is_lora_parameter(name) ? p : p.to(compute).to(at::kFloat)));
      }
    }
  }
}
