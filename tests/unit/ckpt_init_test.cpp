// Starting a run from checkpoints (stage 1: Meta Llama + a PE file) and loading whole models strictly.
#include "torch_catch.h"

#include <filesystem>
#include <fstream>

#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/safetensors.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/config/load.h"
#include "plm/model/init.h"
#include "scratch.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace plm;

namespace {

config::ModelArgs tiny(const std::vector<std::string>& overrides = {}) {
  std::vector<std::string> all = {"model.vocab_size=300"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", all).args.model;
}

}  // namespace

TEST_CASE("stage 1: Meta's Llama folder + a 336-px PE file with extra blocks, as PLM starts") {
  Scratch scratch("plm_ckpt_init");
  const fs::path& dir_path = scratch.dir;
  // A "trained" decoder and a "released" PE with one block more, an attention pooler, ln_post and proj, saved
  // the way the originals are (visual./module. prefixes, rope.freqs, a 3x3 grid where the model has 4x4).
  model::PerceptionLM source(
      tiny({"model.vision_model.layers=3", "model.vision_model.image_size=42", "model.vision_model.use_ln_post=true"}));
  at::manual_seed(3);
  model::init_all(*source);
  ckpt::TensorMap meta, pe;
  for (const auto& p : source->named_parameters()) {
    const std::string& n = p.key();
    if (n.rfind("vision_model.", 0) == 0)
      pe.insert("module.visual." + n.substr(13), p.value());
    else if (n.rfind("vision_projector.", 0) != 0)
      meta.insert(n, p.value());
  }
  meta.insert("rope.freqs", at::ones({8}));
  pe.insert("module.visual.attn_pool.probe", at::ones({1, 1, 32}));
  pe.insert("module.visual.proj", at::ones({32, 16}));
  pe.insert("module.text.token_embedding.weight", at::ones({10, 4}));
  fs::create_directories(dir_path / "llama" / "original");
  ckpt::save_torch_state_dict(meta, (dir_path / "llama" / "original" / "consolidated.00.pth").string());
  ckpt::save_torch_state_dict(pe, (dir_path / "pe.pt").string());

  config::CheckpointArgs c;
  c.init_ckpt_path = (dir_path / "llama" / "original").string();
  c.vision_model_path = (dir_path / "pe.pt").string();
  model::PerceptionLM m(tiny());
  at::manual_seed(4);
  const ckpt::LoadReport r = ckpt::init_from_checkpoints(*m, c);

  CHECK(at::equal(m->tok_embeddings, source->tok_embeddings));
  CHECK(at::equal(m->layers->ptr(1)->named_parameters()["feed_forward.w2.weight"],
                  source->layers->ptr(1)->named_parameters()["feed_forward.w2.weight"]));
  const auto src_block = source->vision_model->resblocks->ptr(1)->named_parameters();
  CHECK(at::equal(m->vision_model->resblocks->ptr(1)->named_parameters()["attn.in_proj_weight"],
                  src_block["attn.in_proj_weight"]));
  // 3x3 -> 4x4 position grid, CLS row kept
  const at::Tensor want = model::resample_position_embedding(source->vision_model->positional_embedding, 3, 4, 4, true);
  CHECK(at::allclose(m->vision_model->positional_embedding, want));
  CHECK(at::equal(m->vision_model->positional_embedding[0], source->vision_model->positional_embedding[0]));
  // the projector is not in either file: randomly initialised, reported missing
  CHECK(m->vision_projector->linear_0->weight.abs().sum().item<double>() > 0);
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  CHECK(has(r.missing, "vision_projector.projector.0.weight"));
  CHECK_FALSE(has(r.missing, "tok_embeddings.weight"));
  CHECK(r.unexpected.empty());
  CHECK(r.mismatched.empty());
  std::string ignored;
  for (const auto& i : r.ignored) ignored += i.key + " ";
  CHECK_THAT(ignored, Catch::Contains("rope.freqs"));
  CHECK_THAT(ignored, Catch::Contains("resblocks.2."));
  CHECK_THAT(ignored, Catch::Contains("attn_pool"));
  CHECK_THAT(ignored, Catch::Contains("ln_post"));
}

TEST_CASE("stage 2 from a stage-1 consolidated.pth: LayerScale starts at ls_init_value, everything else loads") {
  Scratch scratch("plm_ckpt_init");
  const fs::path& dir_path = scratch.dir;
  model::PerceptionLM stage1(tiny());
  model::init_all(*stage1);
  ckpt::TensorMap sd;
  for (const auto& p : stage1->named_parameters()) sd.insert(p.key(), p.value());
  sd.insert("output.tied_module.weight", stage1->tok_embeddings);  // PLM's tied duplicate
  ckpt::save_torch_state_dict(sd, (dir_path / "consolidated.pth").string());
  config::CheckpointArgs c;
  c.init_ckpt_path = dir_path.string();
  model::PerceptionLM stage2(tiny({"model.vision_model.ls_init_value=0.1", "model.vision_model.drop_path=0.1"}));
  const ckpt::LoadReport r = ckpt::init_from_checkpoints(*stage2, c);
  CHECK(at::equal(stage2->vision_projector->linear_2->weight, stage1->vision_projector->linear_2->weight));
  CHECK(r.missing.size() == 4);  // ls_1/ls_2 of two blocks
  for (const auto& name : r.missing) CHECK_THAT(name, Catch::Contains(".gamma"));
  CHECK(at::equal(stage2->vision_model->resblocks->ptr(0)->named_parameters()["ls_1.gamma"], at::full({32}, 0.1)));
  CHECK(r.unexpected.empty());
}

TEST_CASE("a stage start from a checkpoint of another shape is refused, naming each tensor, both shapes and the key") {
  Scratch scratch("plm_ckpt_init");
  for (const std::string& other : {std::string("model.vocab_size=320"), std::string("model.vision_model.width=48")}) {
    INFO(other);
    model::PerceptionLM written(tiny({other}));
    model::init_all(*written);
    ckpt::TensorMap sd;
    for (const auto& p : written->named_parameters()) sd.insert(p.key(), p.value());
    const fs::path dir = scratch.dir / other;
    fs::create_directories(dir);
    ckpt::write_safetensors(sd, (dir / "consolidated.safetensors").string());
    config::CheckpointArgs c;
    c.init_ckpt_path = dir.string();
    model::PerceptionLM m(tiny());
    try {
      ckpt::init_from_checkpoints(*m, c);
      FAIL("a checkpoint of another shape was loaded");
    } catch (const ckpt::CheckpointError& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK_THAT(msg, Catch::Contains("checkpoint.init_ckpt_path '" + dir.string() + "'"));
      if (other.find("vocab") != std::string::npos) {
        CHECK_THAT(msg, Catch::Contains("tok_embeddings.weight: checkpoint [320, 64] vs model [300, 64]"));
        CHECK_THAT(msg, Catch::Contains("model.vocab_size"));
      } else {
        CHECK_THAT(msg, Catch::Contains("vision_model.") && Catch::Contains("[48") && Catch::Contains("[32"));
        CHECK_THAT(msg, Catch::Contains("model.vision_model.width"));
      }
    }
  }
}

TEST_CASE("strict loading names missing, unexpected and mis-shaped tensors, and params.json gives the model") {
  Scratch scratch("plm_ckpt_init");
  const fs::path& dir_path = scratch.dir;
  model::PerceptionLM m(tiny());
  model::init_all(*m);
  ckpt::TensorMap sd;
  for (const auto& p : m->named_parameters())
    if (p.key() != "norm.weight") sd.insert(p.key(), p.key() == "layers.0.ffn_norm.weight" ? at::ones({3}) : p.value());
  sd.insert("made.up", at::ones({1}));
  ckpt::write_safetensors(sd, (dir_path / "consolidated.safetensors").string());
  {
    std::ofstream(dir_path / "params.json") << R"({"name": "x", "model": {"dim": 64, "n_layers": 2, "n_heads": 4,
      "n_kv_heads": 2, "vocab_size": 300, "ffn_dim_multiplier": 1.5, "multiple_of": 32, "rope_theta": 500000.0,
      "weight_tying": true, "pooling_ratio": 2, "vision_model": {"image_size": 56, "patch_size": 14, "width": 32,
      "layers": 2, "heads": 2, "mlp_ratio": 4.0, "use_cls_token": true, "use_ln_post": false, "pool_type": "none"}}})";
  }
  CHECK(ckpt::read_model_args(dir_path.string()).dim == 64);
  try {
    ckpt::load_model(dir_path.string());
    FAIL("a checkpoint that does not fit was accepted");
  } catch (const ckpt::CheckpointError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("1 missing: norm.weight"));
    CHECK_THAT(msg, Catch::Contains("layers.0.ffn_norm.weight: checkpoint [3] vs model [64]"));
    CHECK_THAT(msg, Catch::Contains("1 unexpected: made.up"));
    CHECK_THAT(msg, Catch::Contains(dir_path.string()));
  }
  CHECK_THROWS_WITH(ckpt::read_model_args((dir_path / "a" / "b").string()), Catch::Contains("no params.json"));
  // params.json is read with the recipe loader's bounds: brackets nested past its limit are refused, naming the file.
  std::ofstream(dir_path / "params.json", std::ios::trunc)
      << "{\"model\": " << std::string(300, '[') << std::string(300, ']') << "}";
  const auto deep = thrown<ckpt::CheckpointError>([&] { ckpt::read_model_args(dir_path.string()); });
  REQUIRE(deep);
  CHECK_THAT(deep->what(), Catch::Contains("params.json") && Catch::Contains("more than 200 deep"));
}
