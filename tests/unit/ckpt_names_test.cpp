// Tensor-name maps (src/plm/ckpt/name_maps.h): the q/k permutation, HF PerceptionLM <-> native against the Python
// reference fixture (tests/parity/make_hf_perception_lm.py, run from here into a temporary folder), PE release
// checkpoints, PLM's position-embedding interpolation, and Meta's Llama checkpoints.
#include "torch_catch.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "plm/ckpt/name_maps.h"
#include "plm/ckpt/safetensors.h"
#include "test_helpers.h"

namespace fs = std::filesystem;

using namespace plm::ckpt;
using plm::NamedTensors;

namespace {

// Runs make_hf_perception_lm.py with `options` into a fresh temporary folder, once per option string per process;
// the folders are removed at exit. Fails the test (never skips) when the venv or the script is missing or fails.
const fs::path& hf_fixture(const std::string& options) {
  static std::map<std::string, fs::path> made;
  static struct Cleanup {
    ~Cleanup() {
      for (const auto& entry : made) fs::remove_all(entry.second);
    }
  } cleanup;
  if (auto it = made.find(options); it != made.end()) return it->second;

  const fs::path dir =
      fs::temp_directory_path() / ("plm_ckpt_names_" + std::to_string(getpid()) + "_" + std::to_string(made.size()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const PythonRun r = run_reference_python("tests/parity/make_hf_perception_lm.py", "'" + dir.string() + "' " + options,
                                           (dir / "make.log").string());
  if (!r.ok()) {
    fs::remove_all(dir);
    FAIL("make_hf_perception_lm.py failed: " << r.command << "\n" << r.output);
  }
  return made.emplace(options, dir).first->second;
}

std::string list_ignored(const MappedTensors& m) {
  std::string s;
  for (const auto& i : m.ignored) s += i.key + " (" + i.reason + ")\n";
  return s;
}

std::string reason_of(const MappedTensors& m, const std::string& key) {
  for (const auto& i : m.ignored)
    if (i.key == key) return i.reason;
  return "<not ignored>";
}

const at::Tensor* find(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

// Every tensor of `got` is in `want` under the same name with the same dtype, shape and values, and vice versa.
void check_same(const NamedTensors& got, const TensorMap& want) {
  CHECK(got.size() == want.size());
  for (const auto& [name, tensor] : got) {
    INFO(name);
    const at::Tensor* w = want.find(name);
    REQUIRE(w != nullptr);
    CHECK(tensor.scalar_type() == w->scalar_type());
    REQUIRE(tensor.sizes() == w->sizes());
    CHECK(at::equal(tensor, *w));
  }
}

// The checks every fixture gets: hf_to_native equals the script's own Python mapping exactly, the inverse
// reproduces the HF file, and interpolate_pos_embed equals PLM's Python rule.
void check_fixture(const fs::path& dir, const DecoderLayout& layout, bool has_cls, int64_t old_grid) {
  const TensorMap hf = read_safetensors_dir((dir / "hf").string());
  const TensorMap native = read_safetensors((dir / "native.safetensors").string());
  const NamedTensors hf_list(hf.begin(), hf.end());

  const MappedTensors mapped = hf_to_native(hf_list, layout);
  INFO("ignored:\n" << list_ignored(mapped));
  CHECK(mapped.ignored.empty());
  check_same(mapped.tensors, native);

  const MappedTensors back = native_to_hf(mapped.tensors, layout);
  CHECK(back.ignored.empty());
  check_same(back.tensors, hf);
  check_same(hf_to_native(back.tensors, layout).tensors, native);

  const TensorMap interp = read_safetensors((dir / "interp_check.safetensors").string());
  const at::Tensor& pos = interp.at("pos_embed");
  const at::Tensor& want = interp.at("pos_embed_interp");
  const int64_t new_grid = static_cast<int64_t>(std::lround(std::sqrt(want.size(0) - (has_cls ? 1 : 0))));
  CHECK(at::equal(interpolate_pos_embed(pos, old_grid, new_grid, has_cls), want));
  CHECK(at::equal(interpolate_pos_embed(pos, old_grid, old_grid + 1, old_grid + 2, has_cls),
                  interp.at("pos_embed_interp_rect")));
}

// 2-D tensor with a distinct value per element.
at::Tensor iota(int64_t rows, int64_t cols) {
  return at::arange(rows * cols, at::kFloat).reshape({rows, cols});
}

}  // namespace

TEST_CASE("q/k rows: interleaved <-> rotate-half is HF's permutation, round-trips and preserves RoPE") {
  const int64_t heads = 3, hd = 8, dim = 5;
  const at::Tensor w = iota(heads * hd, dim);
  const at::Tensor hf = interleaved_to_rotate_half(w, heads, hd);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) CHECK(at::equal(hf[h * hd + j * hd / 2 + i], w[h * hd + 2 * i + j]));
  CHECK(at::equal(rotate_half_to_interleaved(hf, heads, hd), w));
  CHECK_THROWS(interleaved_to_rotate_half(iota(heads * hd + 1, dim), heads, hd));

  // Meta's interleaved RoPE on native rows equals HF's rotate-half RoPE on permuted rows, permuted.
  at::manual_seed(0);
  const at::Tensor wq = at::randn({heads * hd, dim}), x = at::randn({dim});
  const at::Tensor theta = at::arange(hd / 2, at::kFloat) * 0.7 + 0.3;
  const at::Tensor c = theta.cos(), s = theta.sin();
  const at::Tensor qn = at::matmul(wq, x).reshape({heads, hd / 2, 2});
  const at::Tensor a = qn.select(2, 0), b = qn.select(2, 1);
  const at::Tensor rot_native = at::stack({a * c - b * s, b * c + a * s}, 2).reshape({heads * hd, 1});
  const at::Tensor qh = at::matmul(interleaved_to_rotate_half(wq, heads, hd), x).reshape({heads, 2, hd / 2});
  const at::Tensor x1 = qh.select(1, 0), x2 = qh.select(1, 1);
  const at::Tensor rot_hf = at::stack({x1 * c - x2 * s, x2 * c + x1 * s}, 1).reshape({heads * hd, 1});
  CHECK(at::allclose(interleaved_to_rotate_half(rot_native, heads, hd), rot_hf, 1e-6, 1e-6));
}

TEST_CASE("HF <-> native equals the Python reference: CLS, GQA, tied embeddings, pooling 2") {
  const fs::path& dir = hf_fixture("--images-per-sample 1,1");
  check_fixture(dir, {4, 2, 8, /*weight_tying=*/true}, /*has_cls=*/true, /*old_grid=*/4);
}

TEST_CASE("HF <-> native equals the Python reference: no CLS, MHA, untied, pooling 1, interpolated grid") {
  const fs::path& dir = hf_fixture(
      "--no-cls --untied --pooling 1 --n-kv-heads 4 --rope-scale 1 --interp-size 48 "
      "--images-per-sample 1,1");
  check_fixture(dir, {4, 4, 8, /*weight_tying=*/false}, /*has_cls=*/false, /*old_grid=*/4);
}

TEST_CASE("hf_to_native reports HF-only keys and refuses a layout that disagrees with the tensors") {
  const std::string text = "model.language_model.", timm = "model.vision_tower.timm_model.";
  const NamedTensors hf = {
      {text + "layers.0.self_attn.rotary_emb.inv_freq", at::zeros({4})},
      {text + "rotary_emb.inv_freq", at::zeros({4})},
      {timm + "rope.pos_embed", at::zeros({4, 8})},
      {timm + "attn_pool.latent", at::zeros({1, 1, 8})},
      {timm + "head.weight", at::zeros({2, 8})},
      {"lm_head.weight", at::zeros({10, 8})},
      {"model.something.new", at::zeros({1})},
      {timm + "cls_token", at::arange(8, at::kFloat).reshape({1, 1, 8})},
  };
  const MappedTensors m = hf_to_native(hf, {2, 2, 4, /*weight_tying=*/true});
  REQUIRE(m.tensors.size() == 1);
  CHECK(m.tensors[0].first == "vision_model.class_embedding");
  CHECK(m.tensors[0].second.sizes() == at::IntArrayRef{8});
  CHECK(reason_of(m, text + "layers.0.self_attn.rotary_emb.inv_freq") == "RoPE buffer, recomputed from the config");
  CHECK(reason_of(m, text + "rotary_emb.inv_freq") == "RoPE buffer, recomputed from the config");
  CHECK(reason_of(m, timm + "rope.pos_embed") == "RoPE buffer, recomputed from the config");
  CHECK_THAT(reason_of(m, timm + "attn_pool.latent"), Catch::Contains("PLM does not build"));
  CHECK_THAT(reason_of(m, timm + "head.weight"), Catch::Contains("PLM does not build"));
  CHECK_THAT(reason_of(m, "lm_head.weight"), Catch::Contains("weight tying"));
  CHECK(reason_of(m, "model.something.new") == "unknown key");

  // Untied, lm_head maps to output.
  const MappedTensors untied = hf_to_native({{"lm_head.weight", at::zeros({10, 8})}}, {2, 2, 4, false});
  REQUIRE(untied.tensors.size() == 1);
  CHECK(untied.tensors[0].first == "output.weight");

  // 3 heads of head_dim 4 is 12 rows, not 16.
  const NamedTensors bad = {{text + "layers.0.self_attn.q_proj.weight", iota(16, 8)}};
  CHECK_THROWS_AS(hf_to_native(bad, {3, 1, 4, false}), CheckpointError);
  CHECK_THROWS_WITH(hf_to_native(bad, {3, 1, 4, false}), Catch::Contains("q_proj") && Catch::Contains("heads"));
  const NamedTensors dup = {{text + "norm.weight", at::ones({8})}, {text + "norm.weight", at::ones({8})}};
  CHECK_THROWS_AS(hf_to_native(dup, {2, 2, 4, false}), CheckpointError);
}

TEST_CASE("native_to_hf leaves out the tied duplicate and RoPE buffers, and lays out timm shapes") {
  const NamedTensors native = {
      {"tok_embeddings.weight", iota(10, 8)},
      {"output.tied_module.weight", iota(10, 8)},
      {"rope_embeddings.freqs_cis", at::zeros({4, 2, 2, 2})},
      {"vision_model.positional_embedding", iota(17, 8)},
      {"vision_model.class_embedding", at::ones({8})},
      {"vision_model.transformer.resblocks.3.ls_2.gamma", at::ones({8})},
      {"vision_projector.projector.2.bias", at::ones({8})},
  };
  const MappedTensors m = native_to_hf(native, {2, 2, 4, /*weight_tying=*/true});
  INFO(list_ignored(m));
  CHECK(m.ignored.size() == 2);
  CHECK_THAT(reason_of(m, "output.tied_module.weight"), Catch::Contains("weight tying"));
  CHECK(reason_of(m, "rope_embeddings.freqs_cis") == "RoPE buffer, recomputed from the config");
  const std::string timm = "model.vision_tower.timm_model.";
  REQUIRE(find(m.tensors, timm + "pos_embed") != nullptr);
  CHECK(find(m.tensors, timm + "pos_embed")->sizes() == at::IntArrayRef{1, 17, 8});
  CHECK(find(m.tensors, timm + "cls_token")->sizes() == at::IntArrayRef{1, 1, 8});
  CHECK(find(m.tensors, timm + "blocks.3.gamma_2") != nullptr);
  CHECK(find(m.tensors, "model.multi_modal_projector.linear_2.bias") != nullptr);
  CHECK(find(m.tensors, "model.language_model.embed_tokens.weight") != nullptr);
}

TEST_CASE("pe_checkpoint_to_native follows PLM's load_ckpt: module./visual. stripping, truncation, extras") {
  const NamedTensors pe = {
      {"module.visual.conv1.weight", at::ones({8, 3, 2, 2})},
      {"visual.class_embedding", at::ones({8})},
      {"visual.positional_embedding", at::ones({5, 8})},
      {"visual.ln_pre.weight", at::ones({8})},
      {"visual.transformer.resblocks.0.attn.in_proj_weight", iota(24, 8)},
      {"visual.transformer.resblocks.1.ls_1.gamma", at::ones({8})},
      {"visual.transformer.resblocks.2.mlp.c_fc.weight", at::ones({32, 8})},
      {"visual.ln_post.weight", at::ones({8})},
      {"visual.attn_pool.probe", at::ones({1, 1, 8})},
      {"visual.proj", at::ones({8, 4})},
      {"visual.mystery", at::ones({1})},
      {"transformer.resblocks.0.attn.in_proj_weight", at::zeros({24, 8})},  // the text tower
      {"logit_scale", at::ones({})},
  };
  const MappedTensors m = pe_checkpoint_to_native(pe, /*layers=*/2);
  INFO(list_ignored(m));
  std::vector<std::string> names;
  for (const auto& [n, t] : m.tensors) names.push_back(n);
  CHECK(names == std::vector<std::string>{"vision_model.conv1.weight", "vision_model.class_embedding",
                                          "vision_model.positional_embedding", "vision_model.ln_pre.weight",
                                          "vision_model.transformer.resblocks.0.attn.in_proj_weight",
                                          "vision_model.transformer.resblocks.1.ls_1.gamma"});
  // Renaming shares the tensors, and the visual tower's block 0 is the one kept, not the text tower's.
  CHECK(m.tensors[4].second.data_ptr() == pe[4].second.data_ptr());
  CHECK_THAT(reason_of(m, "visual.transformer.resblocks.2.mlp.c_fc.weight"), Catch::Contains("beyond layers = 2"));
  CHECK_THAT(reason_of(m, "visual.ln_post.weight"), Catch::Contains("use_ln_post false"));
  CHECK_THAT(reason_of(m, "visual.attn_pool.probe"), Catch::Contains("pool_type none"));
  CHECK_THAT(reason_of(m, "visual.proj"), Catch::Contains("output_dim None"));
  CHECK_THAT(reason_of(m, "visual.mystery"), Catch::Contains("not a parameter"));
  CHECK_THAT(reason_of(m, "transformer.resblocks.0.attn.in_proj_weight"), Catch::Contains("vision tower"));
  CHECK_THAT(reason_of(m, "logit_scale"), Catch::Contains("vision tower"));

  // A vision-only file (PE-Lang style, no visual. prefix), with ln_post kept when the config uses it.
  const NamedTensors lang = {{"module.conv1.weight", at::ones({8, 3, 2, 2})},
                             {"ln_post.bias", at::ones({8})},
                             {"transformer.resblocks.22.ls_2.gamma", at::ones({8})},
                             {"transformer.resblocks.23.ls_2.gamma", at::ones({8})}};
  const MappedTensors l = pe_checkpoint_to_native(lang, /*layers=*/23, /*use_ln_post=*/true);
  INFO(list_ignored(l));
  REQUIRE(l.tensors.size() == 3);
  CHECK(l.tensors[0].first == "vision_model.conv1.weight");
  CHECK(l.tensors[1].first == "vision_model.ln_post.bias");
  CHECK(l.tensors[2].first == "vision_model.transformer.resblocks.22.ls_2.gamma");
  CHECK_THAT(reason_of(l, "transformer.resblocks.23.ls_2.gamma"), Catch::Contains("block 23"));
}

TEST_CASE("interpolate_pos_embed keeps the CLS row in front and is the identity on the same grid") {
  at::manual_seed(1);
  const at::Tensor pos = at::randn({1 + 24 * 24, 16});
  const at::Tensor same = interpolate_pos_embed(pos, 24, 24, true);
  CHECK(at::equal(same, pos));
  const at::Tensor up = interpolate_pos_embed(pos, 24, 32, true);  // PE-Core-L14-336 -> 448 tiles
  CHECK(up.sizes() == at::IntArrayRef{1 + 32 * 32, 16});
  CHECK(at::equal(up[0], pos[0]));
  const at::Tensor rect = interpolate_pos_embed(pos.narrow(0, 1, 24 * 24), 24, 10, 12, false);
  CHECK(rect.sizes() == at::IntArrayRef{120, 16});
  CHECK_THROWS(interpolate_pos_embed(pos, 24, 32, false));  // 577 rows is a 24x24 grid only with CLS
}

TEST_CASE("meta_llama_to_native keeps decoder names, drops rope.freqs and a tied output") {
  const NamedTensors meta = {
      {"tok_embeddings.weight", iota(10, 8)},
      {"layers.0.attention.wq.weight", iota(8, 8)},
      {"layers.0.feed_forward.w2.weight", iota(8, 16)},
      {"layers.0.ffn_norm.weight", at::ones({8})},
      {"norm.weight", at::ones({8})},
      {"output.weight", iota(10, 8)},
      {"rope.freqs", at::ones({4})},
      {"vision_model.conv1.weight", at::ones({1})},
      {"layers.0.attention.bogus", at::ones({1})},
  };
  const MappedTensors tied = meta_llama_to_native(meta, /*weight_tying=*/true);
  INFO(list_ignored(tied));
  CHECK(tied.tensors.size() == 5);
  CHECK(find(tied.tensors, "output.weight") == nullptr);
  CHECK(find(tied.tensors, "layers.0.attention.wq.weight")->data_ptr() == meta[1].second.data_ptr());
  CHECK_THAT(reason_of(tied, "output.weight"), Catch::Contains("weight tying"));
  CHECK(reason_of(tied, "rope.freqs") == "RoPE buffer, recomputed from the config");
  CHECK(reason_of(tied, "vision_model.conv1.weight") == "not a decoder parameter");
  CHECK(reason_of(tied, "layers.0.attention.bogus") == "not a decoder parameter");
  const MappedTensors untied = meta_llama_to_native(meta, /*weight_tying=*/false);
  CHECK(untied.tensors.size() == 6);
  CHECK(find(untied.tensors, "output.weight") != nullptr);
}
