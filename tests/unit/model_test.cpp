// The model's structure (names, shapes, sizes), RoPE tables, forward semantics, freezing and init.
#include "torch_catch.h"

#include "model_batches.h"

#include <map>
#include <set>

#include "plm/common/counter_hash.h"
#include "plm/config/load.h"
#include "plm/data/collate.h"
#include "plm/model/init.h"
#include "plm/model/model_inputs.h"
#include "plm/model/perception_lm.h"
#include "plm/ops/ops.h"

using namespace plm;

namespace {

config::ModelArgs model_args(const std::string& name, const std::vector<std::string>& overrides = {}) {
  return config::load_config(PLM_SOURCE_DIR "/configs/models/" + name + ".yaml", overrides).args.model;
}

std::map<std::string, std::vector<int64_t>> shapes(const torch::nn::Module& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

int64_t numel(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST_CASE("parameter names and shapes are PLM's consolidated names (docs/reference.md 1.6)") {
  auto args = model_args("tiny", {"model.vision_model.ls_init_value=0.1"});
  const model::PerceptionLM m(args, at::TensorOptions().device(at::kMeta));
  const auto s = shapes(*m);
  const int64_t dim = 64, w = 32, hd = 16, hidden = model::decoder_dims(args).hidden_dim;
  CHECK(s.at("tok_embeddings.weight") == std::vector<int64_t>{128256, dim});
  CHECK(s.at("layers.1.attention.wq.weight") == std::vector<int64_t>{4 * hd, dim});
  CHECK(s.at("layers.1.attention.wk.weight") == std::vector<int64_t>{2 * hd, dim});
  CHECK(s.at("layers.1.attention.wv.weight") == std::vector<int64_t>{2 * hd, dim});
  CHECK(s.at("layers.1.attention.wo.weight") == std::vector<int64_t>{dim, 4 * hd});
  CHECK(s.at("layers.0.feed_forward.w1.weight") == std::vector<int64_t>{hidden, dim});
  CHECK(s.at("layers.0.feed_forward.w2.weight") == std::vector<int64_t>{dim, hidden});
  CHECK(s.at("layers.0.attention_norm.weight") == std::vector<int64_t>{dim});
  CHECK(s.at("layers.0.ffn_norm.weight") == std::vector<int64_t>{dim});
  CHECK(s.at("norm.weight") == std::vector<int64_t>{dim});
  CHECK(s.count("output.weight") == 0);  // tied
  CHECK(s.at("vision_projector.projector.0.weight") == std::vector<int64_t>{dim, w});
  CHECK(s.at("vision_projector.projector.2.bias") == std::vector<int64_t>{dim});
  CHECK(s.at("vision_model.conv1.weight") == std::vector<int64_t>{w, 3, 14, 14});
  CHECK(s.count("vision_model.conv1.bias") == 0);
  CHECK(s.at("vision_model.class_embedding") == std::vector<int64_t>{w});
  CHECK(s.at("vision_model.positional_embedding") == std::vector<int64_t>{1 + 16, w});
  CHECK(s.at("vision_model.ln_pre.weight") == std::vector<int64_t>{w});
  const std::string blk = "vision_model.transformer.resblocks.1.";
  CHECK(s.at(blk + "attn.in_proj_weight") == std::vector<int64_t>{3 * w, w});
  CHECK(s.at(blk + "attn.in_proj_bias") == std::vector<int64_t>{3 * w});
  CHECK(s.at(blk + "attn.out_proj.weight") == std::vector<int64_t>{w, w});
  CHECK(s.at(blk + "ls_1.gamma") == std::vector<int64_t>{w});
  CHECK(s.at(blk + "mlp.c_fc.weight") == std::vector<int64_t>{4 * w, w});
  CHECK(s.at(blk + "mlp.c_proj.bias") == std::vector<int64_t>{w});
  CHECK(s.count("vision_model.ln_post.weight") == 0);
  const model::PerceptionLM untied(model_args("tiny", {"model.weight_tying=false", "model.vision_model=null"}),
                                   at::TensorOptions().device(at::kMeta));
  CHECK(shapes(*untied).at("output.weight") == std::vector<int64_t>{128256, dim});
  CHECK(shapes(*untied).count("vision_model.conv1.weight") == 0);
  CHECK(shapes(*m).count(blk + "ls_1.gamma") == 1);
  CHECK(shapes(*model::PerceptionLM(model_args("tiny"), at::TensorOptions().device(at::kMeta)))
            .count(blk + "ls_1.gamma") == 0);  // no LayerScale without ls_init_value
}

TEST_CASE("PLM 1B/3B/8B sizes (built on the meta device: no memory)") {
  const auto d1 = model::decoder_dims(model_args("plm_1b")), d3 = model::decoder_dims(model_args("plm_3b")),
             d8 = model::decoder_dims(model_args("plm_8b"));
  CHECK(d1.hidden_dim == 8192);
  CHECK(d3.hidden_dim == 8192);
  CHECK(d8.hidden_dim == 14336);
  CHECK(d1.head_dim == 64);
  CHECK(d3.head_dim == 128);
  CHECK(d8.head_dim == 128);
  const model::PerceptionLM m8(model_args("plm_8b"), at::TensorOptions().device(at::kMeta));
  const auto s = shapes(*m8);
  CHECK(s.at("vision_model.transformer.resblocks.46.mlp.c_fc.weight") == std::vector<int64_t>{8960, 1536});
  CHECK(s.count("vision_model.transformer.resblocks.47.mlp.c_fc.weight") == 0);
  CHECK(s.at("vision_model.positional_embedding") == std::vector<int64_t>{1024, 1536});  // no CLS on G
  CHECK(numel(*m8) > 8'000'000'000LL);
}

TEST_CASE("Llama 3 RoPE scaling keeps, blends and divides the frequencies as docs/reference.md 1.5 counts") {
  auto count = [](int64_t head_dim) {
    config::ModelArgs a;
    a.rope_theta = 500000;
    a.rope_scale_factor = 32;
    a.high_freq_factor = 4;
    const at::Tensor scaled = model::decoder_frequencies(a, head_dim);
    a.rope_scale_factor = 1;
    const at::Tensor plain = model::decoder_frequencies(a, head_dim);
    int kept = 0, divided = 0, mixed = 0;
    for (int64_t i = 0; i < plain.size(0); ++i) {
      const float p = plain[i].item<float>(), s = scaled[i].item<float>();
      if (p == s)
        ++kept;
      else if (s == p / 32.0f)
        ++divided;
      else
        ++mixed;
    }
    return std::vector<int>{kept, mixed, divided};
  };
  CHECK(count(64) == std::vector<int>{15, 3, 14});
  CHECK(count(128) == std::vector<int>{29, 6, 29});
}

TEST_CASE("the vision 2D RoPE: column half first, row half second, zero angle for CLS") {
  const auto t = model::vision_rope(8, 2, 3, true);  // 2 pairs per axis
  REQUIRE(t.cos.sizes() == at::IntArrayRef({7, 4}));
  CHECK(at::equal(t.cos[0], at::ones({4})));  // CLS
  // token 1 + (row 1 * 3 + col 2) = 6: x position 3, y position 2 (positions start at 1 with CLS)
  const auto row = at::acos(t.cos[6]);
  CHECK(row[0].item<float>() == Approx(3.0f).epsilon(1e-5));          // x * f0, f0 = 1
  CHECK(row[2].item<float>() == Approx(2.0f).epsilon(1e-5));          // y * f0
  CHECK(row[1].item<float>() == Approx(3.0f * 0.01f).epsilon(1e-3));  // x * f1, f1 = 10000^(-2/4)
}

TEST_CASE("forward: shapes, causality, vision tokens stitched in order, loss = CE over masked positions") {
  at::manual_seed(0);
  model::PerceptionLM m(model_args("tiny", {"model.vocab_size=1000"}));
  model::init_all(*m);
  m->eval();
  auto in = text_and_image_batch(*m, 12, 3);
  const at::Tensor logits = m->forward(in);
  CHECK(logits.sizes() == at::IntArrayRef({2, 12, 1000}));
  // causal: changing the last token leaves every earlier position alone
  auto in2 = in;
  in2.tokens = in.tokens.clone();
  in2.tokens.index_put_({0, 11}, (in.tokens[0][11].item<int64_t>() + 1) % 1000);
  const at::Tensor logits2 = m->forward(in2);
  CHECK(at::equal(logits.slice(1, 0, 11), logits2.slice(1, 0, 11)));
  // image positions: the token id there does not matter, the image does
  in2 = in;
  in2.tokens = in.tokens.clone();
  in2.tokens.slice(1, 3, 7).fill_(5);
  CHECK(at::allclose(m->forward(in2), logits));
  in2.images = in.images.flip(0);
  CHECK_FALSE(at::allclose(m->forward(in2).slice(1, 3), logits.slice(1, 3)));
  // a mismatch between image positions and vision vectors is refused with a message
  in2 = in;
  in2.image_mask = in.image_mask.clone();
  in2.image_mask.index_put_({0, 0}, true);
  CHECK_THROWS_WITH(m->forward(in2), Catch::Contains("image-token positions"));
  // text-only samples' dummy chunks are dropped after the vision tower
  in2 = in;
  in2.chunk_has_text = at::tensor(std::vector<int64_t>{0, 1}).to(at::kBool);
  in2.image_mask = in.image_mask.clone();
  in2.image_mask[1].fill_(false);
  CHECK(at::allclose(m->forward(in2)[0], logits[0]));
  // loss
  const at::Tensor targets = at::randint(0, 1000, {2, 12}, at::kLong);
  const at::Tensor mask = at::rand({2, 12}) > 0.5;
  const at::Tensor want = ops::cross_entropy(logits.index({mask}), targets.index({mask}));
  CHECK(m->loss(in, targets, mask).item<float>() == Approx(want.item<float>()).epsilon(1e-5));
}

TEST_CASE("DropPath: off in eval, per-sample masks in training, same masks give the same block output") {
  at::manual_seed(1);
  model::PerceptionLM m(
      model_args("tiny", {"model.vision_model.drop_path=0.5", "model.vision_model.ls_init_value=0.1"}));
  model::init_all(*m);
  auto& v = *m->vision_model;
  const at::Tensor images = at::randn({8, 3, 56, 56});
  v.eval();
  CHECK(v.draw_drop_path(8, at::kFloat).empty());
  CHECK(at::equal(v.forward(images), v.forward(images)));
  v.train();
  const auto masks = v.draw_drop_path(8, at::kFloat);
  REQUIRE(masks.size() == 2);
  const at::Tensor values = std::get<0>(at::_unique(masks[0].attn));  // {0, 1/keep}
  CHECK(values.numel() <= 2);
  CHECK(values.max().item<float>() == Approx(2.0f));
  const at::Tensor x = at::randn({8, 17, 32});
  const auto rope = model::vision_rope(16, 4, 4, true);
  auto& block = *v.resblocks->ptr(0)->as<model::VisionBlockImpl>();
  CHECK(at::equal(block.forward(x, rope, masks[0]), block.forward(x, rope, masks[0])));  // recompute-safe
  CHECK_FALSE(at::equal(v.forward(images), v.forward(images)));                          // fresh masks each call
}

TEST_CASE("DropPath with keys: an image's masks are a function of its key alone, kept at the keep rate") {
  const double drop = GENERATE(0.1, 0.5);
  at::manual_seed(2);
  model::PerceptionLM m(model_args(
      "tiny", {"model.vision_model.drop_path=" + std::to_string(drop), "model.vision_model.ls_init_value=0.1"}));
  auto& v = *m->vision_model;
  v.train();
  std::vector<uint64_t> keys;
  for (int i = 0; i < 2000; ++i) keys.push_back(plm::counter_hash(99, static_cast<uint64_t>(i), 7));
  const at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor before = gen.get_state();
  const auto all = v.draw_drop_path(2000, at::kFloat, keys);
  CHECK(at::equal(gen.get_state(), before));  // no draw from the generator
  REQUIRE(all.size() == 2);
  const double keep = 1 - drop;
  for (const auto& masks : all)
    for (const at::Tensor& t : {masks.attn, masks.mlp}) {
      CHECK(t.sizes() == at::IntArrayRef{2000, 1, 1});
      const at::Tensor kept = t > 0;
      CHECK(at::allclose(t.index({kept}), at::full({1}, 1 / keep)));  // timm: kept rows scaled by 1/keep
      // 2000 draws: the kept fraction is within 5 standard deviations of the keep rate.
      CHECK(std::abs(kept.to(at::kDouble).mean().item<double>() - keep) < 5 * std::sqrt(keep * (1 - keep) / 2000));
    }
  CHECK_FALSE(at::equal(all[0].attn, all[0].mlp));  // branches and blocks draw independently
  CHECK_FALSE(at::equal(all[0].attn, all[1].attn));
  // Any subset in any order (another rank, micro-batch or batch size) gets the same masks for the same keys.
  const std::vector<size_t> picked = {1999, 3, 500, 3};
  std::vector<uint64_t> some;
  for (const size_t i : picked) some.push_back(keys[i]);
  const auto part = v.draw_drop_path(4, at::kFloat, some);
  for (size_t j = 0; j < 2; ++j)
    for (size_t r = 0; r < picked.size(); ++r) {
      CHECK(part[j].attn[r].item<float>() == all[j].attn[picked[r]].item<float>());
      CHECK(part[j].mlp[r].item<float>() == all[j].mlp[picked[r]].item<float>());
    }
  CHECK_THROWS(v.draw_drop_path(3, at::kFloat, some));  // one key per image
}

TEST_CASE("drop_path_keys: one key per chunk, from (seed, step, stream slot, chunk) only") {
  data::Batch a, b;
  a.num_chunks = {2, 1};
  a.slots = {10, 11};
  b.num_chunks = {1, 3, 2};
  b.slots = {11, 7, 10};  // slot 10 and 11 again, elsewhere in another batch
  const auto ka = model::drop_path_keys(a, 42, 5), kb = model::drop_path_keys(b, 42, 5);
  REQUIRE(ka.size() == 3);
  REQUIRE(kb.size() == 6);
  CHECK(ka[0] == kb[4]);  // slot 10 chunk 0
  CHECK(ka[1] == kb[5]);  // slot 10 chunk 1
  CHECK(ka[2] == kb[0]);  // slot 11 chunk 0
  CHECK(std::set<uint64_t>(kb.begin(), kb.end()).size() == 6);
  CHECK(model::drop_path_keys(a, 42, 6)[0] != ka[0]);  // another step
  CHECK(model::drop_path_keys(a, 43, 5)[0] != ka[0]);  // another seed
  a.slots.pop_back();
  CHECK_THROWS(model::drop_path_keys(a, 42, 5));
}

TEST_CASE("activation checkpointing gives the gradients of the plain graph, DropPath and frozen towers included") {
  for (const bool freeze : {false, true}) {
    INFO("frozen decoder and vision: " << freeze);
    at::manual_seed(3);
    const std::string f = freeze ? "true" : "false";
    model::PerceptionLM m(
        model_args("tiny", {"model.vision_model.drop_path=0.5", "model.vision_model.ls_init_value=0.1",
                            "model.freeze_language_model=" + f, "model.freeze_vision_model=" + f}));
    model::init_all(*m);
    m->train();
    m->apply_freezing();
    const model::ModelInputs in = text_and_image_batch(*m, 12, 3);
    const at::Tensor targets = at::randint(0, 1000, {2, 12}, at::kLong);
    const at::Tensor mask = at::rand({2, 12}) > 0.3;
    const auto plain = loss_and_gradients(*m, in, targets, mask, false);
    const auto ac = loss_and_gradients(*m, in, targets, mask, true);
    CHECK(plain.first == ac.first);
    REQUIRE(plain.second.size() == ac.second.size());
    CHECK(plain.second.size() > (freeze ? 3u : 30u));
    for (const auto& [name, g] : plain.second) {
      INFO(name);
      REQUIRE(ac.second.count(name));
      CHECK(at::allclose(g, ac.second.at(name), 1e-5, 1e-7));
    }
  }
}

TEST_CASE("freezing follows PLM's names: projector always trains") {
  model::PerceptionLM m(model_args("tiny", {"model.freeze_language_model=true", "model.freeze_vision_model=true"}),
                        at::TensorOptions().device(at::kMeta));
  m->train();
  m->apply_freezing();
  for (const auto& p : m->named_parameters())
    CHECK(p.value().requires_grad() == (p.key().rfind("vision_projector", 0) == 0));
  m->eval();
  m->apply_freezing();
  for (const auto& p : m->parameters()) CHECK_FALSE(p.requires_grad());
}

TEST_CASE("init: decoder reproducible from model.seed, projector biases drawn too, norms 1, truncation at 3 std") {
  auto args = model_args("tiny", {"model.vocab_size=500"});
  model::PerceptionLM a(args), b(args);
  model::init_all(*a);
  model::init_all(*b);
  CHECK(at::equal(a->tok_embeddings, b->tok_embeddings));  // seeded: independent of the global RNG
  CHECK(at::equal(a->norm->weight, at::ones({64})));
  const double std = 1.0 / 8.0;  // 64^-0.5
  CHECK(a->tok_embeddings.abs().max().item<double>() <= 3 * std + 1e-6);
  CHECK(a->tok_embeddings.std().item<double>() ==
        Approx(std * 0.9866).epsilon(0.02));  // std of a normal truncated at 3 std
  const at::Tensor bias = a->vision_projector->linear_0->bias;
  CHECK(bias.abs().max().item<double>() > 0);
  CHECK(bias.abs().max().item<double>() <= 3 * std + 1e-6);
  CHECK(
      at::equal(a->vision_model->resblocks->ptr(0)->as<model::VisionBlockImpl>()->attn->in_proj_bias, at::zeros({96})));
  // init_base_std sets the blocks' std only; the embedding and untied output keep dim^-0.5, as PLM's.
  model::PerceptionLM c(
      model_args("tiny", {"model.vocab_size=500", "model.init_base_std=0.02", "model.weight_tying=false"}));
  model::init_all(*c);
  CHECK(c->tok_embeddings.std().item<double>() == Approx(std * 0.9866).epsilon(0.02));
  CHECK(c->output.std().item<double>() == Approx(std * 0.9866).epsilon(0.02));
  const at::Tensor wq = c->layers[0]->as<model::TransformerBlockImpl>()->attention->wq->weight;
  CHECK(wq.std().item<double>() == Approx(0.02 * 0.9866).epsilon(0.05));
}
