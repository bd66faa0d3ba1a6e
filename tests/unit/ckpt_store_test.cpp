// Training checkpoints on disk: save/load, damage detection, retention, consolidation (ckpt/checkpoint_store.h),
// and the sharded layout: flat buffers read back at another world size (resharding) and unflattened (ckpt/sharded.h).
#include "torch_catch.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include "plm/ckpt/checkpoint_store.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/sharded.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/common/log.h"
#include "plm/config/emit.h"
#include "plm/config/load.h"
#include "plm/model/init.h"
#include "scratch.h"

namespace fs = std::filesystem;
using namespace plm;

namespace {

// Same dtype, shape and bytes (NaN payloads included).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

bool same_maps(const ckpt::TensorMap& a, const ckpt::TensorMap& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a)
    if (!b.contains(name) || !same_bits(t, b.at(name))) return false;
  return true;
}

ckpt::CheckpointContents contents(double seed) {
  ckpt::CheckpointContents c;
  at::Tensor w = at::randn({3, 4}) + seed;
  w[0][0] = std::numeric_limits<float>::quiet_NaN();
  c.model.insert("w", w);
  c.model.insert("w_bf16", (at::randn({5}) + seed).to(at::kBFloat16));
  c.model.insert("ids", at::arange(4, at::kLong).reshape({2, 2}) + static_cast<int64_t>(seed));
  c.model.insert("scale", at::scalar_tensor(seed));
  c.optimizer.insert("w.exp_avg", at::randn({3, 4}));
  c.optimizer.insert("w.exp_avg_sq", at::rand({3, 4}));
  c.optimizer.insert("w.step", at::scalar_tensor(static_cast<int64_t>(seed), at::kLong));
  c.extra.insert("rng", at::randint(0, 255, {16}, at::kByte));
  c.extra.insert("flags", at::arange(5) % 2 == 0);
  c.params_json = R"({"name": "t", "steps": 10})";
  c.train_state_json = R"({"step": )" + std::to_string(static_cast<int64_t>(seed)) + "}";
  return c;
}

std::string slurp(const fs::path& p) {
  log::flush();
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Sends log lines to a file for the test's lifetime.
struct LogCapture {
  fs::path file;
  explicit LogCapture(const Scratch& s) : file(s.path("log.txt")) { log::init({0, "INFO", file.string(), true}); }
  ~LogCapture() { log::init({0, "INFO", "", true}); }
  std::string text() const { return slurp(file); }
};

std::set<int64_t> steps_in(const fs::path& root) {
  std::set<int64_t> out;
  for (const auto& e : fs::directory_iterator(root)) out.insert(std::stoll(e.path().filename().string()));
  return out;
}

}  // namespace

TEST_CASE("save then load gives every tensor and text back bit-exactly, in a step folder with a manifest") {
  Scratch s("plm_store");
  const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
  const auto c = contents(500);
  const std::string dir = store.save(500, c);
  CHECK(dir == s.path("ckpt/0000000500"));
  CHECK(dir == store.step_dir(500));
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "extra.safetensors", "params.json",
                        "train_state.json", "manifest.json"})
    CHECK(fs::exists(fs::path(dir) / f));
  CHECK(steps_in(s.path("ckpt")) == std::set<int64_t>{500});  // no temporary folder left
  ckpt::CheckpointStore::verify(dir);
  const auto back = ckpt::CheckpointStore::load(dir);
  CHECK(same_maps(c.model, back.model));
  CHECK(same_maps(c.optimizer, back.optimizer));
  CHECK(same_maps(c.extra, back.extra));
  CHECK(back.model.at("scale").dim() == 0);
  CHECK(back.params_json == c.params_json);
  CHECK(back.train_state_json == c.train_state_json);
  CHECK(store.newest_complete() == dir);

  auto no_extra = contents(600);
  no_extra.extra = {};
  const std::string dir2 = store.save(600, no_extra);
  CHECK_FALSE(fs::exists(fs::path(dir2) / "extra.safetensors"));
  CHECK(ckpt::CheckpointStore::load(dir2).extra.empty());
  CHECK(store.newest_complete() == dir2);
}

TEST_CASE("newest_complete passes over a damaged newer folder and says which file and why") {
  struct Damage {
    const char* what;
    std::function<void(const fs::path&)> apply;
    const char* file;    // named in the warning
    const char* reason;  // said in the warning
  };
  const std::vector<Damage> damages = {
      {"truncated shard",
       [](const fs::path& d) { fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 7); },
       "model.safetensors", "truncated"},
      {"flipped byte",
       [](const fs::path& d) {
         std::fstream f(d / "optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
         f.seekg(-5, std::ios::end);
         const char b = static_cast<char>(f.get() ^ 0x10);
         f.seekp(-5, std::ios::end);
         f.put(b);
       },
       "optimizer.safetensors", "checksum"},
      {"missing manifest", [](const fs::path& d) { fs::remove(d / "manifest.json"); }, "manifest.json",
       "did not finish"},
      {"missing file", [](const fs::path& d) { fs::remove(d / "train_state.json"); }, "train_state.json", "missing"},
      {"edited text", [](const fs::path& d) { std::ofstream(d / "params.json") << R"({"name": "u", "steps": 10})"; },
       "params.json", "checksum"},
  };
  for (const auto& damage : damages) {
    INFO(damage.what);
    Scratch s("plm_store_damage");
    LogCapture log(s);
    const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
    const std::string good = store.save(100, contents(1));
    const std::string bad = store.save(200, contents(2));
    damage.apply(bad);
    CHECK_THROWS_AS(ckpt::CheckpointStore::verify(bad), ckpt::CheckpointError);
    CHECK(store.newest_complete() == good);
    const std::string text = log.text();
    CHECK_THAT(text, Catch::Contains("skipping checkpoint '" + bad + "'"));
    CHECK_THAT(text, Catch::Contains(damage.file));
    CHECK_THAT(text, Catch::Contains(damage.reason));
    CHECK_FALSE(fs::exists(bad));  // reported and moved aside, not deleted: a later save of step 200 cannot replace it
    CHECK(fs::exists(fs::path(bad + ".damaged") / "params.json"));
    CHECK_THAT(text, Catch::Contains("aside to '" + bad + ".damaged'"));
  }
}

TEST_CASE("when no step folder verifies newest_complete refuses, leaving them in place, unless asked to start over") {
  Scratch s("plm_store_all_damaged");
  LogCapture log(s);
  const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
  std::vector<std::string> dirs;
  for (int64_t step : {100, 200, 300}) {
    dirs.push_back(store.save(step, contents(step)));
    fs::remove(fs::path(dirs.back()) / (step == 200 ? "manifest.json" : "model.safetensors"));
  }
  try {
    (void)store.newest_complete();
    FAIL("no refusal");
  } catch (const ckpt::CheckpointError& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("none of the 3 step folders"));
    CHECK_THAT(what, Catch::Contains("0000000100 to 0000000300"));
    CHECK_THAT(what, Catch::Contains("checkpoint.restart_when_damaged"));
  }
  for (const auto& d : dirs) CHECK(fs::exists(d));
  // A folder of the same name was set aside before: the next one takes .damaged.2.
  fs::create_directories(dirs[0] + ".damaged");
  CHECK_FALSE(store.newest_complete(/*start_over=*/true).has_value());
  for (const auto& d : dirs) CHECK_FALSE(fs::exists(d));
  CHECK(fs::exists(dirs[0] + ".damaged.2"));
  CHECK(fs::exists(dirs[1] + ".damaged"));
  CHECK(fs::exists(dirs[2] + ".damaged"));
  // A new save of a set-aside step and retention leave the damaged folders alone.
  const ckpt::CheckpointStore keep_one(s.path("ckpt"), {100, 1}, {});
  const std::string fresh = keep_one.save(300, contents(7));
  keep_one.clean_up(fresh);
  CHECK(fs::exists(dirs[2] + ".damaged"));
  CHECK(keep_one.newest_complete() == fresh);
}

TEST_CASE("a save that fails or crashes leaves only a temporary folder, which the next run ignores and removes") {
  Scratch s("plm_store_crash");
  const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
  const std::string good = store.save(100, contents(1));
  // A crash mid-save: files written, no manifest, never renamed.
  s.write("ckpt/.tmp-200-4242/model.safetensors", "partial");
  s.write("ckpt/.tmp-200-4242.old/params.json", "{}");
  fs::create_directories(s.path("ckpt/not-a-step"));
  CHECK(store.newest_complete() == good);
  CHECK_FALSE(fs::exists(s.path("ckpt/.tmp-200-4242")));
  CHECK_FALSE(fs::exists(s.path("ckpt/.tmp-200-4242.old")));
  CHECK(fs::exists(s.path("ckpt/not-a-step")));  // not ours: left alone

  // A save that throws (a complex tensor cannot be written) removes its temporary folder.
  auto bad = contents(3);
  bad.extra.insert("z", at::zeros({2}, at::kComplexFloat));
  CHECK_THROWS_AS(store.save(300, bad), ckpt::CheckpointError);
  CHECK_FALSE(fs::exists(store.step_dir(300)));
  for (const auto& e : fs::directory_iterator(s.path("ckpt")))
    CHECK(e.path().filename().string().rfind(".tmp", 0) != 0);
  CHECK(store.newest_complete() == good);

  const ckpt::CheckpointStore empty(s.path("none"), {}, {});
  CHECK_FALSE(empty.newest_complete().has_value());
}

TEST_CASE("saving a step again replaces its folder whole") {
  Scratch s("plm_store_replace");
  const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
  store.save(700, contents(1));
  fs::remove(fs::path(store.step_dir(700)) / "manifest.json");  // e.g. the damaged folder we resume past
  auto second = contents(2);
  second.extra = {};
  const std::string dir = store.save(700, second);
  ckpt::CheckpointStore::verify(dir);
  const auto back = ckpt::CheckpointStore::load(dir);
  CHECK(same_maps(back.model, second.model));
  CHECK_FALSE(fs::exists(fs::path(dir) / "extra.safetensors"));  // nothing of the old folder survives
  CHECK(steps_in(s.path("ckpt")) == std::set<int64_t>{700});
}

TEST_CASE("clean_up keeps the newest dump.keep and eval.keep multiples, all others, and the union") {
  Scratch s("plm_store_retention");
  const fs::path root = s.dir / "ckpt";
  auto make = [&](std::initializer_list<int64_t> steps) {
    fs::remove_all(root);
    for (int64_t step : steps) fs::create_directories(root / fmt::format("{:010d}", step));
  };
  auto run = [&](config::SaveEvery dump, config::SaveEvery eval, int64_t protect) {
    const ckpt::CheckpointStore store(root.string(), dump, eval);
    store.clean_up(store.step_dir(protect));
    return steps_in(root);
  };
  const std::initializer_list<int64_t> steps = {10, 20, 25, 30, 40, 50, 55, 75, 80};
  // dump multiples 10 20 30 40 50 80 keep 2 -> 50 80; eval multiples 25 50 75 keep 1 -> 75; 55 is neither.
  make(steps);
  CHECK(run({10, 2}, {25, 1}, 80) == std::set<int64_t>{50, 55, 75, 80});
  // eval.keep 0 keeps every eval multiple; 50 survives as an eval multiple though dump drops it.
  make(steps);
  CHECK(run({10, 1}, {25, 0}, 80) == std::set<int64_t>{25, 50, 55, 75, 80});
  // dump.keep 0 keeps every dump multiple.
  make(steps);
  CHECK(run({10, 0}, {25, 1}, 80) == std::set<int64_t>{10, 20, 30, 40, 50, 55, 75, 80});
  // PLM's defaults (every 1000, keep 0 for eval) with dump every 500 keep 1: 1000-multiples stay forever.
  make({500, 1000, 1500, 2000, 2500});
  CHECK(run({500, 1}, {1000, 0}, 2500) == std::set<int64_t>{1000, 2000, 2500});
  // The folder just written survives even when no rule keeps it.
  make(steps);
  CHECK(run({10, 1}, {25, 1}, 20) == std::set<int64_t>{20, 55, 75, 80});
}

TEST_CASE("consolidate writes fp32 consolidated.pth and .safetensors that load_model reads back") {
  Scratch s("plm_store_consolidate");
  const config::TrainArgs train_args =
      config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml", {"model.vocab_size=300"}).args;
  const config::ModelArgs& args = train_args.model;
  REQUIRE(args.weight_tying);
  model::PerceptionLM source(args);
  at::manual_seed(11);
  model::init_all(*source);
  ckpt::CheckpointContents c;
  for (const auto& p : source->named_parameters()) c.model.insert(p.key(), p.value().detach());
  c.optimizer.insert("tok_embeddings.weight.step", at::scalar_tensor(7, at::kLong));
  c.params_json = config::to_json(train_args);  // the whole TrainArgs, as PLM writes params.json
  c.train_state_json = R"({"step": 7})";
  const ckpt::CheckpointStore store(s.path("ckpt"), {}, {});
  const std::string dir = store.save(7, c);
  {
    config::TrainArgs a, b;
    a.model = args;
    b.model = ckpt::read_model_args(dir);
    REQUIRE(config::to_yaml(a) == config::to_yaml(b));
  }

  const auto written = ckpt::consolidate(dir);
  REQUIRE(written.size() == 2);
  const ckpt::TensorMap pth = ckpt::load_torch_state_dict(dir + "/consolidated.pth");
  CHECK(pth.size() == c.model.size() + 1);
  REQUIRE(pth.contains("output.tied_module.weight"));
  CHECK(same_bits(pth.at("output.tied_module.weight"), c.model.at("tok_embeddings.weight")));
  CHECK(pth.at("output.tied_module.weight").data_ptr() == pth.at("tok_embeddings.weight").data_ptr());  // saved once
  CHECK_FALSE(ckpt::read_safetensors(dir + "/consolidated.safetensors").contains("output.tied_module.weight"));
  ckpt::CheckpointStore::verify(dir);  // the manifest's files are untouched

  // PLM's release layout (params.json + consolidated.pth only), the .safetensors, and the step folder itself.
  const fs::path release = s.dir / "release";
  fs::create_directories(release);
  fs::copy_file(dir + "/params.json", release / "params.json");
  fs::copy_file(dir + "/consolidated.pth", release / "consolidated.pth");
  for (const std::string& path : {release.string(), dir + "/consolidated.safetensors", dir}) {
    INFO(path);
    ckpt::LoadReport report;
    const model::PerceptionLM loaded = ckpt::load_model(path, &report);
    CHECK(report.problems().empty());
    for (const auto& p : loaded->named_parameters()) CHECK(same_bits(p.value(), c.model.at(p.key())));
  }

  // bf16 master weights come out as fp32.
  ckpt::CheckpointContents half = c;
  half.model = {};
  for (const auto& [name, t] : c.model) half.model.insert(name, t.to(at::kBFloat16));
  const std::string dir16 = store.save(8, half);
  ckpt::consolidate(dir16);
  for (const auto& [name, t] : ckpt::read_safetensors(dir16 + "/consolidated.safetensors")) {
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(same_bits(t, half.model.at(name).to(at::kFloat)));
  }

  fs::remove(dir16 + "/manifest.json");
  CHECK_THROWS_WITH(ckpt::consolidate(dir16), Catch::Contains("manifest.json"));
}

// Throughput on a ~1 GB checkpoint: `ckpt_store_test "[.bench]"` (PLM_BENCH_DIR picks the disk, default /tmp).

TEST_CASE("sharded checkpoint layout: ranges read across shards at another world size, then unflattened") {
  Scratch s("plm_shards");
  dist::ShardLayout layout;
  layout.world_size = 3;
  layout.units.push_back({"a", {{"a.w", {2, 5}, 0, 10}, {"a.b", {3}, 10, 3}}, 13, true});
  layout.units.push_back({"b", {{"b.w", {4}, 0, 4}}, 4, false});
  const at::Tensor a = at::arange(13, at::kFloat), bvals = at::arange(100, 104, at::kFloat);
  for (int r = 0; r < 3; ++r) {
    ckpt::TensorMap model;
    const int64_t sa = dist::shard_length(13, 3), sb = dist::shard_length(4, 3);
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
