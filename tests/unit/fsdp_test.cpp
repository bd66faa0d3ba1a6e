// Fully sharded data parallel on one rank (the multi-rank equivalence runs in tests/e2e/cli_dist_train.sh): the
// sharded model computes the plain model's loss and gradients bit for bit in fp32 (the per-unit recomputation adds
// no error), in bf16 within rounding; frozen units get no gradient; the units cover every parameter; and a sharded
// checkpoint's flat buffers read back at another world size (resharding) and unflatten to the parameters.
#include "torch_catch.h"

#include "plm/ckpt/sharded.h"
#include "plm/config/load.h"
#include "plm/dist/fsdp.h"
#include "plm/model/init.h"
#include "plm/model/units.h"
#include "scratch.h"

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
at::Tensor flat_gradient(const model::PerceptionLMImpl& m, const ckpt::UnitLayout& unit) {
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

TEST_CASE("one-rank full_shard in bf16: the plain bf16 model's loss; frozen units get no gradient") {
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

TEST_CASE("sharded checkpoint layout: ranges read across shards at another world size, then unflattened") {
  Scratch s("plm_shards");
  ckpt::ShardLayout layout;
  layout.world_size = 3;
  layout.units.push_back({"a", {{"a.w", {2, 5}, 0, 10}, {"a.b", {3}, 10, 3}}, 13, true});
  layout.units.push_back({"b", {{"b.w", {4}, 0, 4}}, 4, false});
  const at::Tensor a = at::arange(13, at::kFloat), bvals = at::arange(100, 104, at::kFloat);
  for (int r = 0; r < 3; ++r) {
    ckpt::TensorMap model;
    const int64_t sa = ckpt::shard_length(13, 3), sb = ckpt::shard_length(4, 3);
    CHECK(sa == 5);
    model.insert("a", at::constant_pad_nd(a, {0, 2}).narrow(0, r * sa, sa).clone());
    model.insert("b", at::constant_pad_nd(bvals, {0, 2}).narrow(0, r * sb, sb).clone());
    ckpt::write_safetensors(model, s.path(ckpt::shard_file_name("model", r, 3)));
  }
  s.write("shards.json", ckpt::layout_to_json(layout));
  CHECK(ckpt::shard_file_name("model", 1, 3) == "model.shard-00001-of-00003.safetensors");
  ckpt::ShardedCheckpointReader reader(s.dir.string());
  CHECK(reader.layout().units.size() == 2);
  // rank 1 of 2 owns elements [7, 14) of unit a: 7..12, then padding
  const at::Tensor got = reader.read_flat_range("model", *reader.unit("a"), "a", 7, 7);
  CHECK(at::equal(got, at::tensor({7.f, 8.f, 9.f, 10.f, 11.f, 12.f, 0.f})));
  CHECK_FALSE(reader.read_flat_range("model", *reader.unit("a"), "grad.a", 0, 7).defined());  // optional entries
  const ckpt::TensorMap full = ckpt::unflatten(s.dir.string());
  CHECK(at::equal(full.at("a.w"), a.narrow(0, 0, 10).view({2, 5})));
  CHECK(at::equal(full.at("a.b"), a.narrow(0, 10, 3)));
  CHECK(at::equal(full.at("b.w"), bvals));
  std::filesystem::remove(s.path(ckpt::shard_file_name("model", 2, 3)));
  ckpt::ShardedCheckpointReader broken(s.dir.string());
  CHECK_THROWS_WITH(broken.read_flat_range("model", *broken.unit("a"), "a", 10, 3),
                    Catch::Contains("model.shard-00002-of-00003.safetensors") && Catch::Contains("missing"));
}
