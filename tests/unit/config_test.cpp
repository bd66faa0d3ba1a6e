// Config loading: defaults <- YAML (+ includes) <- overrides, every error path, print/load fixpoint.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "plm/config/emit.h"
#include "plm/config/load.h"
#include "plm/config/suggest.h"
#include "plm/config/validate.h"
#include "scratch.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace plm::config;

namespace {

std::string error_of(const std::string& recipe, const std::vector<std::string>& overrides = {}) {
  return ::error_of<ConfigError>([&] { load_config(recipe, overrides); });
}

const std::string repo = PLM_SOURCE_DIR;

}  // namespace

TEST_CASE("defaults are PLM's TrainArgs defaults") {
  const auto a = load_config("").args;
  CHECK(a.name == "plm");
  CHECK(a.seed == 42);
  CHECK(a.steps == 1000);
  CHECK(a.grad_acc_steps == 1);
  CHECK(a.optim.lr == 3e-4);
  CHECK(a.optim.warmup == 2000);
  CHECK(a.optim.lr_min_ratio == 0.1);
  CHECK(a.optim.beta2 == 0.95);
  CHECK(a.optim.scheduler == "cosine");
  CHECK(a.model.rope_theta == 10000.0);
  CHECK(a.model.rope_scale_factor == 1);
  CHECK(a.model.high_freq_factor == 32);
  CHECK_FALSE(a.model.vision_model.has_value());
  CHECK(a.data.batch_size == 2);
  CHECK(a.data.seed == 42);
  CHECK_FALSE(a.data.max_num_tiles.has_value());
  CHECK(a.distributed.fsdp_type == FsdpType::no_shard);
  CHECK(a.checkpoint.dump.every == 1000);
  CHECK(a.checkpoint.eval.keep == 0);
  CHECK(a.logging.freq == 10);
  CHECK(a.env.OMP_NUM_THREADS == "1");
}

TEST_CASE("a YAML file overrides defaults, typed, and leaves other keys alone") {
  Scratch s;
  const auto p = s.write("r.yaml", R"(
name: run
steps: 7
optim:
  lr: 1e-5
  weight_decay: 0.05
model:
  freeze_language_model: True
  ffn_dim_multiplier: 1.5
  vision_model:
    width: 32
    ls_init_value: 0.1
data:
  vision_input_type: thumb+tile
  max_num_tiles: 36
)");
  const auto a = load_config(p).args;
  CHECK(a.name == "run");
  CHECK(a.steps == 7);
  CHECK(a.optim.lr == 1e-5);
  CHECK(a.optim.weight_decay == 0.05);
  CHECK(a.optim.warmup == 2000);  // untouched default
  CHECK(a.model.freeze_language_model);
  CHECK(a.model.ffn_dim_multiplier == 1.5);
  REQUIRE(a.model.vision_model.has_value());
  CHECK(a.model.vision_model->width == 32);
  CHECK(a.model.vision_model->ls_init_value == 0.1);
  CHECK(a.model.vision_model->image_size == 448);  // PE default inside a section that was set
  CHECK(a.data.vision_input_type == "thumb+tile");
  CHECK(a.data.max_num_tiles == 36);
}

TEST_CASE("include merges files in order, the including file wins, maps merge key by key") {
  Scratch s;
  s.write("configs/models/m.yaml",
          "model:\n  dim: 256\n  n_layers: 4\n  vision_model:\n    width: 64\n    layers: 3\n");
  s.write("configs/extra.yaml", "steps: 5\nmodel:\n  n_layers: 6\n");
  const auto p = s.write("recipes/stage/r.yaml",
                         "include: [configs/models/m.yaml, configs/extra.yaml]\nmodel:\n  dim: 512\n"
                         "  vision_model:\n    layers: 9\n");
  const auto loaded = load_config(p);
  const auto& a = loaded.args;
  CHECK(a.model.dim == 512);     // the including file wins
  CHECK(a.model.n_layers == 6);  // a later include wins over an earlier one
  CHECK(a.steps == 5);
  CHECK(a.model.vision_model->width == 64);  // merged, not replaced
  CHECK(a.model.vision_model->layers == 9);
  // origins point at the file and line that set each key
  CHECK(loaded.source.where("model.dim") == p + ":3");
  CHECK(loaded.source.where("model.n_layers").find("extra.yaml:3") != std::string::npos);
}

TEST_CASE("include: nested includes, a single name, and the errors") {
  Scratch s;
  s.write("a.yaml", "include: b.yaml\nseed: 1\n");
  s.write("b.yaml", "include: c.yaml\nseed: 2\nsteps: 3\n");
  s.write("c.yaml", "steps: 4\ngrad_acc_steps: 5\n");
  const auto a = load_config((s.dir / "a.yaml").string()).args;
  CHECK(a.seed == 1);
  CHECK(a.steps == 3);
  CHECK(a.grad_acc_steps == 5);

  s.write("cycle1.yaml", "include: cycle2.yaml\n");
  s.write("cycle2.yaml", "include: cycle1.yaml\n");
  CHECK_THAT(error_of((s.dir / "cycle1.yaml").string()), Catch::Contains("include cycle"));

  const auto missing = s.write("missing.yaml", "seed: 1\ninclude: nope/none.yaml\n");
  const auto err = error_of(missing);
  CHECK_THAT(err, Catch::Contains(missing + ":2"));
  CHECK_THAT(err, Catch::Contains("'nope/none.yaml' not found"));

  CHECK_THAT(error_of(s.write("badinc.yaml", "include: {a: 1}\n")), Catch::Contains("must be a file name"));
}

TEST_CASE("unreadable files, bad YAML and non-mapping documents are clear errors") {
  Scratch s;
  CHECK_THAT(error_of((s.dir / "absent.yaml").string()), Catch::Contains("cannot read config file"));
  const auto bad = s.write("bad.yaml", "seed: 1\nmodel: [1, 2\n");
  const auto e = error_of(bad);
  CHECK_THAT(e, Catch::Contains(bad + ":"));
  CHECK_THAT(e, Catch::Contains("invalid YAML"));
  CHECK_THAT(error_of(s.write("list.yaml", "- 1\n- 2\n")), Catch::Contains("must be a mapping"));
  CHECK(load_config(s.write("empty.yaml", "")).args.name == "plm");
}

TEST_CASE("overrides apply on top of files, in order, typed") {
  Scratch s;
  const auto p = s.write("r.yaml", "optim:\n  lr: 1e-4\nmodel:\n  n_heads: 8\n");
  const auto loaded = load_config(
      p, {"optim.lr=1e-5", "steps=12", "model.n_heads=null", "model.vision_model.width=48",
          "data.tokenizer_path=", "seed=3", "seed=4", "distributed.full_activation_checkpointing=true", "name=a=b"});
  const auto& a = loaded.args;
  CHECK(a.optim.lr == 1e-5);
  CHECK(a.steps == 12);
  CHECK_FALSE(a.model.n_heads.has_value());
  CHECK(a.model.vision_model->width == 48);  // creates the optional section
  CHECK(a.data.tokenizer_path == std::string());
  CHECK(a.seed == 4);
  CHECK(a.distributed.full_activation_checkpointing);
  CHECK(a.name == "a=b");  // only the first '=' splits
  CHECK(loaded.source.where("optim.lr") == "command-line override 'optim.lr=1e-5'");
  CHECK(loaded.source.where("model.dim") == p + ":3");  // unset key: its closest set ancestor
  CHECK(loaded.source.where("grad_acc_steps") == "built-in default");
}

TEST_CASE("malformed overrides are clear errors") {
  CHECK_THAT(error_of("", {"optim.lr"}), Catch::Contains("'optim.lr' is not of the form key.path=value"));
  CHECK_THAT(error_of("", {"=3"}), Catch::Contains("not of the form"));
  CHECK_THAT(error_of("", {"optim..lr=3"}), Catch::Contains("empty component"));
  CHECK_THAT(error_of("", {"name=[1, 2"}), Catch::Contains("not valid YAML"));
}

TEST_CASE("unknown keys name the key and suggest the closest one") {
  SECTION("a typo in an override") {
    const auto e = error_of("", {"optim.lrr=1"});
    CHECK_THAT(e, Catch::Contains("command-line override 'optim.lrr=1'"));
    CHECK_THAT(e, Catch::Contains("unknown key 'lrr' under 'optim'"));
    CHECK_THAT(e, Catch::Contains("did you mean 'optim.lr'?"));
  }
  SECTION("a typo in a file, with its line") {
    Scratch s;
    const auto p = s.write("r.yaml", "steps: 1\nmodel:\n  dim: 8\n  n_layer: 2\n");
    const auto e = error_of(p);
    CHECK_THAT(e, Catch::Contains(p + ":4: unknown key 'n_layer' under 'model'; did you mean 'model.n_layers'?"));
  }
  SECTION("a key in the wrong section is found by name") {
    const auto e = error_of("", {"warmup=10"});
    CHECK_THAT(e, Catch::Contains("unknown key 'warmup' at the top level; did you mean 'optim.warmup'?"));
  }
  SECTION("nothing close: no suggestion") {
    const auto e = error_of("", {"zzzzqqqq=1"});
    CHECK_THAT(e, Catch::Contains("unknown key 'zzzzqqqq'"));
    CHECK_THAT(e, !Catch::Contains("did you mean"));
  }
  SECTION("every problem is reported, one per line") {
    const auto e = error_of("", {"optim.lrr=1", "steps=many", "model.dimm=3"});
    CHECK(std::count(e.begin(), e.end(), '\n') == 2);
  }
}

TEST_CASE("wrong types say what was expected and what was given") {
  CHECK_THAT(error_of("", {"steps=many"}), Catch::Contains("key 'steps' expects an integer, got 'many'"));
  CHECK_THAT(error_of("", {"steps=1.5"}), Catch::Contains("expects an integer, got '1.5'"));
  CHECK_THAT(error_of("", {"optim.lr=fast"}), Catch::Contains("key 'optim.lr' expects a number, got 'fast'"));
  CHECK_THAT(error_of("", {"model.weight_tying=maybe"}), Catch::Contains("expects true or false, got 'maybe'"));
  CHECK_THAT(error_of("", {"name=[a, b]"}), Catch::Contains("key 'name' expects a string, got a list"));
  CHECK_THAT(error_of("", {"optim=3"}), Catch::Contains("key 'optim' expects a mapping, got '3'"));
  CHECK_THAT(error_of("", {"optim.lr={a: 1}"}), Catch::Contains("expects a number, got a mapping"));
  CHECK_THAT(error_of("", {"steps=null"}), Catch::Contains("expects an integer, got null"));
  Scratch s;
  const auto p = s.write("r.yaml", "data:\n  batch_size: two\n");
  CHECK_THAT(error_of(p), Catch::Contains(p + ":2: key 'data.batch_size' expects an integer"));
}

TEST_CASE("closed choices parse into their enums once, print back as PLM's names, and refuse other names") {
  const TrainArgs a =
      load_config("", {"distributed.fsdp_type=full_shard", "distributed.model_dtype=fp32", "distributed.device=cpu",
                       "optim.loss_normalization=global_tokens", "optim.nan_policy=skip"})
          .args;
  CHECK(a.distributed.fsdp_type == FsdpType::full_shard);
  CHECK(a.distributed.model_dtype == ModelDtype::fp32);
  CHECK(a.distributed.device == Device::cpu);
  CHECK(a.optim.loss_normalization == LossNormalization::global_tokens);
  CHECK(a.optim.nan_policy == NanPolicy::skip);
  const std::string yaml = to_yaml(a), json = to_json(a);
  for (const char* text : {"full_shard", "fp32", "global_tokens", "skip"}) {
    CHECK_THAT(yaml, Catch::Contains(std::string("\"") + text + "\""));
    CHECK_THAT(json, Catch::Contains(std::string("\"") + text + "\""));
  }
  CHECK_THAT(json, Catch::Contains("\"device\": \"cpu\""));
  // Every name of every choice reads back as itself.
  for (const char* name : names_of(Device{}))
    CHECK(name_of(load_config("", {std::string("distributed.device=") + name}).args.distributed.device) ==
          std::string(name));
  CHECK_THAT(error_of("", {"distributed.fsdp_type=hsdp"}),
             Catch::Contains("key 'distributed.fsdp_type' expects one of no_shard, full_shard, got 'hsdp'"));
  CHECK_THAT(error_of("", {"optim.nan_policy=[abort]"}), Catch::Contains("expects one of abort, skip, got a list"));
  Scratch s;
  const auto p = s.write("r.yaml", "distributed:\n  model_dtype: float32\n");
  CHECK_THAT(error_of(p), Catch::Contains(p + ":2: key 'distributed.model_dtype' expects one of bf16, fp16, fp32"));
}

TEST_CASE("numbers in YAML's forms are accepted") {
  const auto a = load_config("", {"optim.lr=3", "steps=+5", "optim.clip=.inf", "model.norm_eps=1E-6"}).args;
  CHECK(a.optim.lr == 3.0);
  CHECK(a.steps == 5);
  CHECK(std::isinf(a.optim.clip));
  CHECK(a.model.norm_eps == 1e-6);
}

TEST_CASE("keys accepted but unused are reported when they ask for non-default behaviour") {
  auto loaded = load_config("", {"distributed.compile=false"});
  CHECK(loaded.ignored.empty());  // PLM's default: nothing is lost
  loaded = load_config("", {"distributed.compile=true", "logging.wandb={project: x}", "data.seq_len=10"});
  REQUIRE(loaded.ignored.size() == 3);
  CHECK_THAT(loaded.ignored[0], Catch::Contains("data.seq_len"));
  CHECK_THAT(loaded.ignored[1], Catch::Contains("distributed.compile (command-line override"));
  CHECK_THAT(loaded.ignored[1], Catch::Contains("torch.compile"));
  CHECK_THAT(loaded.ignored[2], Catch::Contains("logging.wandb"));
  // and they round-trip through print
  CHECK_THAT(to_yaml(loaded.args), Catch::Contains("project: x"));
}

TEST_CASE("print then load gives the same config (fixpoint), for every recipe and odd values") {
  Scratch s;
  std::vector<std::string> recipes;
  for (const auto& stage : {"stage1_warmup", "stage2_midtrain", "stage3_sft"})
    for (const auto& size : {"plm_1b", "plm_3b", "plm_8b"})
      recipes.push_back(repo + "/recipes/" + stage + "/" + size + ".yaml");
  recipes.push_back("");
  for (const auto& r : recipes) {
    INFO(r);
    const auto first =
        to_yaml(load_config(r, {"optim.lr=0.1", "name=\"123\"", "dump_dir='yes: no'", "data.datamix=a:1, b:2",
                                "model.norm_eps=1.0000000000000002e-05", "logging.wandb={tags: [a, b]}"})
                    .args);
    const auto printed = s.write("printed.yaml", first);
    const auto again = load_config(printed);
    CHECK(to_yaml(again.args) == first);
    // params.json: the same configuration as JSON reads back to the same TrainArgs.
    const auto json = s.write("params.json", to_json(again.args));
    CHECK(to_yaml(load_config(json).args) == first);
    CHECK(again.args.name == "123");
    CHECK(again.args.dump_dir == "yes: no");
    CHECK(again.args.model.norm_eps == 1.0000000000000002e-05);
  }
}

TEST_CASE("format_double is shortest round-trip and always looks like a float") {
  CHECK(format_double(500000.0) == "500000.0");
  CHECK(format_double(1e-5) == "1e-05");
  CHECK(format_double(0.1) == "0.1");
  CHECK(format_double(0.0001) == "0.0001");
  CHECK(format_double(-2.0) == "-2.0");
  CHECK(format_double(1e20) == "1e+20");
  CHECK(format_double(5.833333334) == "5.833333334");
  CHECK(std::stod(format_double(1.0 / 3.0)) == 1.0 / 3.0);
}

TEST_CASE("the nine stage recipes carry docs/reference.md 5.1's values") {
  auto load = [](const std::string& stage, const std::string& size) {
    return load_config(repo + "/recipes/" + stage + "/" + size + ".yaml").args;
  };
  for (const auto& size : {"plm_1b", "plm_3b", "plm_8b"}) {
    INFO(size);
    const bool is8b = std::string(size) == "plm_8b";
    for (const auto& stage : {"stage1_warmup", "stage2_midtrain", "stage3_sft"}) {
      const auto a = load(stage, size);
      CHECK(a.seed == 777);
      CHECK(a.optim.clip == 1.0);
      CHECK(a.optim.lr_min_ratio == 0.01);
      CHECK(a.optim.scheduler == "cosine");
      CHECK(a.optim.weight_decay == (is8b ? 0.05 : 0.01));
      CHECK(a.distributed.fsdp_type == FsdpType::full_shard);
      CHECK(a.distributed.model_dtype == ModelDtype::bf16);
      CHECK(a.distributed.full_activation_checkpointing);
      CHECK_FALSE(a.distributed.selective_activation_checkpointing);
      CHECK(a.data.tokenizer_name == "plmchat");
      CHECK(a.data.image_res == 448);
      CHECK(a.checkpoint.dump.every == 500);
      CHECK(a.checkpoint.dump.keep == 1);
      CHECK(a.checkpoint.is_consolidated_model);
      CHECK(a.logging.freq == 10);
      CHECK_FALSE(a.profiling.run);
      CHECK(a.model.mlp_init.use_gaussian);
      CHECK(a.model.vocab_size == 128256);
      CHECK(a.model.rope_theta == 500000.0);
      CHECK(a.model.rope_scale_factor == (is8b ? 1 : 32));
      CHECK(a.model.weight_tying == !is8b);
      REQUIRE(a.model.vision_model.has_value());
      CHECK(a.model.vision_model->pool_type == "none");
      CHECK_FALSE(a.model.vision_model->use_ln_post);
      CHECK(a.model.vision_model->layers == (is8b ? 47 : 23));
      CHECK(a.model.vision_model->use_cls_token == !is8b);
      CHECK(validate(load_config(repo + "/recipes/" + stage + "/" + size + ".yaml")).empty());
    }
    const auto s1 = load("stage1_warmup", size), s2 = load("stage2_midtrain", size), s3 = load("stage3_sft", size);
    CHECK(s1.steps == 8000);
    CHECK(s2.steps == 35000);
    CHECK(s3.steps == 21000);
    CHECK(s1.optim.lr == 1e-4);
    CHECK(s2.optim.lr == 4e-5);
    CHECK(s3.optim.lr == (is8b ? 1e-5 : 4e-5));
    CHECK(s1.optim.warmup == 20);
    CHECK(s2.optim.warmup == 120);
    CHECK(s3.optim.warmup == 120);
    CHECK(s1.data.batch_size == 16);
    CHECK(s2.data.batch_size == (is8b ? 2 : 4));
    CHECK(s3.data.batch_size == 2);
    CHECK(s1.data.num_workers == 8);
    CHECK(s2.data.num_workers == (is8b ? 4 : 8));
    CHECK(s3.data.num_workers == 4);
    CHECK(s1.model.max_seqlen == 1280);
    CHECK(s2.model.max_seqlen == 6144);
    CHECK(s3.model.max_seqlen == 11520);
    CHECK(s1.model.freeze_language_model);
    CHECK(s1.model.freeze_vision_model);
    CHECK_FALSE(s2.model.freeze_language_model);
    CHECK_FALSE(s3.model.freeze_vision_model);
    CHECK(s1.model.pooling_ratio == 1);
    CHECK(s2.model.pooling_ratio == 2);
    CHECK(s1.data.vision_input_type == "vanilla");
    CHECK(s2.data.vision_input_type == "thumb+tile");
    CHECK(s1.data.max_num_tiles == 1);
    CHECK(s2.data.max_num_tiles == 16);
    CHECK(s3.data.max_num_tiles == 36);
    CHECK(s1.data.max_video_frames == 8);
    CHECK(s2.data.max_video_frames == 16);
    CHECK(s3.data.max_video_frames == 32);
    CHECK(s1.data.conversation_format == "warmup");
    CHECK(s3.data.conversation_format == "plm_sft");
    CHECK_FALSE(s1.model.vision_model->ls_init_value.has_value());
    CHECK(s1.model.vision_model->drop_path == 0.0);
    CHECK(s2.model.vision_model->ls_init_value == 0.1);
    CHECK(s3.model.vision_model->drop_path == 0.1);
    CHECK(s1.checkpoint.vision_model_path.has_value());
  }
}

TEST_CASE("validate names every semantic problem with its key and origin") {
  const auto errors = [](const std::vector<std::string>& overrides) {
    std::string all;
    for (const auto& e : validate(load_config(PLM_SOURCE_DIR "/recipes/stage3_sft/plm_1b.yaml", overrides)))
      all += e + "\n";
    return all;
  };
  CHECK(errors({}).empty());
  CHECK_THAT(errors({"optim.scheduler=cosin"}), Catch::Contains("'optim.scheduler' is 'cosin' but must be one of"));
  CHECK_THAT(errors({"distributed.tp_size=2"}), Catch::Contains("tensor parallelism is not supported"));
  CHECK_THAT(errors({"model.n_kv_heads=5"}), Catch::Contains("'model.n_kv_heads' must divide the number of heads"));
  CHECK_THAT(errors({"model.n_heads=30"}), Catch::Contains("'model.n_heads' must divide model.dim"));
  CHECK_THAT(errors({"data.conversation_format=chatml"}), Catch::Contains("data.conversation_format"));
  CHECK_THAT(errors({"data.datamix=a:1,a:2"}), Catch::Contains("names dataset 'a' twice"));
  CHECK_THAT(errors({"data.datamix=a"}), Catch::Contains("not of the form name:weight"));
  CHECK_THAT(errors({"data.datamix=a:0"}), Catch::Contains("not positive"));
  CHECK_THAT(errors({"model.pooling_ratio=3"}), Catch::Contains("must divide the patch grid side (32)"));
  CHECK_THAT(errors({"model.vision_model.pool_type=attn"}), Catch::Contains("pool_type"));
  CHECK_THAT(errors({"dump_dir="}), Catch::Contains("'dump_dir' must be set"));
  CHECK_THAT(errors({"optim.beta2=1"}), Catch::Contains("optim.beta2"));
  CHECK_THAT(errors({"logging.level=LOUD"}), Catch::Contains("logging.level"));
  CHECK_THAT(errors({"steps=0"}), Catch::Contains("command-line override 'steps=0': key 'steps' must be at least 1"));
  // Values that validated and then crashed or stalled set-up (10^12 tokens of RoPE tables, 10^8 layers, tens of
  // thousands of threads, an infinite lr): each is refused naming its key.
  for (const std::string bad : {"model.max_seqlen=1000000000000", "model.n_layers=100000000", "model.dim=10000000",
                                "model.vocab_size=1000000000", "data.num_workers=50000", "data.batch_size=100000000",
                                "data.max_num_tiles=100000", "data.image_res=1000000", "data.max_video_frames=1000000",
                                "data.prefetch_batches=100000", "model.vision_model.layers=100000",
                                "model.vision_model.width=1000000", "optim.lr=.inf", "optim.clip=.nan",
                                "optim.weight_decay=.inf", "model.norm_eps=.inf", "model.rope_theta=.inf"}) {
    INFO(bad);
    CHECK_THAT(errors({bad}), Catch::Contains("'" + bad.substr(0, bad.find('=')) + "'"));
  }
  // PLM's own placeholder datamix is caught with a clear message
  CHECK_THAT(errors({"data.datamix=<We use our synthetic SA-1B dataset for stage 1, https://example>"}),
             Catch::Contains("not of the form name:weight"));
  CHECK_THAT(errors({"data.datamix=a:lots"}), Catch::Contains("weight 'lots' is not a number"));
}

TEST_CASE("parse_datamix normalises weights and ignores whitespace") {
  const auto mix = parse_datamix(" a : 1 , b:3 ");
  REQUIRE(mix.size() == 2);
  CHECK(mix[0].first == "a");
  CHECK(mix[0].second == 0.25);
  CHECK(mix[1].first == "b");
  CHECK(mix[1].second == 0.75);
}

TEST_CASE("edit distance and closest") {
  CHECK(edit_distance("lr", "lrr") == 1);
  CHECK(edit_distance("ab", "ba") == 1);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(closest("lrr", {"lr", "clip", "warmup"}) == "lr");
  CHECK(closest("wramup", {"lr", "warmup"}) == "warmup");
  CHECK(closest("xyz", {"lr", "warmup"}).empty());
}

TEST_CASE("all_key_paths lists every section and expands the vision model") {
  const auto paths = all_key_paths();
  auto has = [&](const std::string& p) { return std::find(paths.begin(), paths.end(), p) != paths.end(); };
  CHECK(has("optim.lr"));
  CHECK(has("model.vision_model.ls_init_value"));
  CHECK(has("checkpoint.dump.keep"));
  CHECK(has("env.NCCL_DEBUG"));
  CHECK(has("profiling.trace_folder"));
}

TEST_CASE(
    "hostile recipes are refused in bounded time: alias bombs / non-regular files / include blow-ups / deep YAML") {
  Scratch s("plm_cfg_hostile");
  SECTION("a map alias bomb (each level doubles the last) in a file and in an override") {
    std::string bomb = "a0: &a0 {x: 1, y: 2}\n";
    for (int i = 1; i <= 40; ++i)
      bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " {l: *a" + std::to_string(i - 1) + ", r: *a" +
              std::to_string(i - 1) + "}\n";
    CHECK_THAT(error_of(s.write(
                   "bomb.yaml", "name: x\neval:\n" +
                                    [&] {
                                      std::string indented;
                                      std::istringstream lines(bomb);
                                      for (std::string l; std::getline(lines, l);) indented += "  " + l + "\n";
                                      return indented;
                                    }())),
               Catch::Contains("bomb.yaml") && Catch::Contains("aliases"));
    // Lists too, under a key that is accepted but unused (it would reach every checkpoint's params.json).
    std::string lists = "[1, 2]";
    std::string flow = "&l0 " + lists;
    std::string doc = "name: x\neval: {l0: " + flow;
    for (int i = 1; i <= 40; ++i)
      doc += ", l" + std::to_string(i) + ": &l" + std::to_string(i) + " [*l" + std::to_string(i - 1) + ", *l" +
             std::to_string(i - 1) + "]";
    CHECK_THAT(error_of(s.write("lists.yaml", doc + "}\n")), Catch::Contains("aliases"));
    CHECK_THAT(error_of("", {"eval={a: &a [1, 2], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], "
                             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c, "
                             "*c, *c], e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], f: [*e, *e, *e, *e, *e, *e, "
                             "*e, *e, *e, *e, *e]}"}),
               Catch::Contains("command-line override") && Catch::Contains("aliases"));
  }
  SECTION("a folder, a FIFO or a device as the recipe or an include") {
    fs::create_directories(s.path("dir.yaml"));
    CHECK_THAT(error_of(s.path("dir.yaml")), Catch::Contains("is a folder"));
    CHECK_THAT(error_of(s.write("inc_dir.yaml", "include: dir.yaml\n")), Catch::Contains("is a folder"));
    REQUIRE(::mkfifo(s.path("fifo.yaml").c_str(), 0600) == 0);  // opening it would block forever
    CHECK_THAT(error_of(s.write("inc_fifo.yaml", "include: fifo.yaml\n")), Catch::Contains("not a regular file"));
    CHECK_THAT(error_of("/dev/zero"), Catch::Contains("not a regular file"));
    CHECK_THAT(error_of(s.write("inc_zero.yaml", "include: /dev/zero\n")), Catch::Contains("/dev/zero"));
  }
  SECTION("a mapping or a list as a key (found by fuzzing: it escaped as a YAML conversion error)") {
    CHECK_THAT(error_of(s.write("mapkey.yaml", "name: x\n{dim: 64}: 3\n")),
               Catch::Contains("mapkey.yaml' line 2") && Catch::Contains("a key must be a name"));
    CHECK_THAT(error_of(s.write("listkey.yaml", "optim:\n  [1, 2]: 3\n")), Catch::Contains("a key must be a name"));
    CHECK_THAT(error_of("", {"optim={[1]: 2}"}), Catch::Contains("a key must be a name"));
  }
  SECTION("a file over the size limit") {
    CHECK_THAT(error_of(s.write("huge.yaml", "name: x\n# " + std::string((16u << 20) + 10, 'y') + "\n")),
               Catch::Contains("huge.yaml") && Catch::Contains("at most"));
  }
  SECTION("a diamond of includes, and a chain deeper than the limit") {
    // d_i includes l_i and r_i, which both include d_{i+1}: 2^12 reads without a bound (24 files deep).
    for (int i = 0; i < 12; ++i) {
      const std::string next = "d" + std::to_string(i + 1) + ".yaml";
      s.write("d" + std::to_string(i) + ".yaml",
              "include: [l" + std::to_string(i) + ".yaml, r" + std::to_string(i) + ".yaml]\n");
      s.write("l" + std::to_string(i) + ".yaml", "include: " + next + "\n");
      s.write("r" + std::to_string(i) + ".yaml", "include: " + next + "\n");
    }
    s.write("d12.yaml", "name: deep\n");
    CHECK_THAT(error_of(s.path("d0.yaml")), Catch::Contains("more than 256 config files"));
    for (int i = 0; i < 40; ++i)
      s.write("c" + std::to_string(i) + ".yaml", "include: c" + std::to_string(i + 1) + ".yaml\n");
    s.write("c40.yaml", "name: chain\n");
    CHECK_THAT(error_of(s.path("c0.yaml")), Catch::Contains("at most 32 deep"));
    // Within the limits both shapes load.
    for (int i = 0; i < 4; ++i)
      s.write("e" + std::to_string(i) + ".yaml",
              "include: [f" + std::to_string(i) + ".yaml, g" + std::to_string(i) + ".yaml]\n"),
          s.write("f" + std::to_string(i) + ".yaml", "include: e" + std::to_string(i + 1) + ".yaml\n"),
          s.write("g" + std::to_string(i) + ".yaml", "include: e" + std::to_string(i + 1) + ".yaml\n");
    s.write("e4.yaml", "name: small_diamond\n");
    CHECK(load_config(s.path("e0.yaml")).args.name == "small_diamond");
  }
  SECTION("YAML nested 100,000 deep names the file and the depth") {
    CHECK_THAT(error_of(s.write("deep.yaml", "name: " + std::string(100000, '[') + std::string(100000, ']') + "\n")),
               Catch::Contains("deep.yaml") && Catch::Contains("200 deep"));
    // Block nesting (indentation) past yaml-cpp's depth guard.
    std::string block;
    for (int i = 0; i < 2100; ++i) block += std::string(static_cast<size_t>(i), ' ') + "k:\n";
    CHECK_THAT(error_of(s.write("deep_block.yaml", block)),
               Catch::Contains("deep_block.yaml") && Catch::Contains("nests deeper"));
  }
  SECTION("brackets nest at most 200 deep, counted before parsing, not in quotes or comments") {
    const auto nest = [](int n) {
      return std::string(static_cast<size_t>(n), '[') + std::string(static_cast<size_t>(n), ']');
    };
    CHECK_THAT(error_of(s.write("b201.yaml", "name: x\neval: " + nest(201) + "\n")),
               Catch::Contains("b201.yaml' line 2") && Catch::Contains("more than 200 deep"));
    CHECK_THAT(error_of(s.write("b200.yaml", "name: x\neval: " + nest(200) + "\n")), !Catch::Contains("deep"));
    // A quote in the middle of a plain scalar is a character, not a quote: it hides nothing.
    CHECK_THAT(error_of(s.write("midquote.yaml", "eval: [a'b, " + nest(200) + "]\n")),
               Catch::Contains("more than 200 deep"));
    const std::string brackets(5000, '[');
    CHECK(load_config(s.write("quoted.yaml", "name: \"" + brackets + "\\\"\"\n")).args.name == brackets + "\"");
    CHECK(load_config(s.write("single.yaml", "name: '" + brackets + "''x'\n")).args.name == brackets + "'x");
    CHECK(load_config(s.write("comment.yaml", "# " + brackets + "\nname: c # " + brackets + "\n")).args.name == "c");
    CHECK_THAT(error_of("", {"eval=" + nest(201)}),
               Catch::Contains("command-line override") && Catch::Contains("more than 200 deep"));
  }
  SECTION("a recipe and its includes hold at most 100,000 values, counted before yaml-cpp builds them") {
    std::string zeros = "0";
    for (int i = 1; i < 60000; ++i) zeros += ",0";
    s.write("big1.yaml", "eval: [" + zeros + "]\n");
    s.write("big2.yaml", "eval: [" + zeros + "]\n");
    CHECK_THAT(error_of(s.path("big1.yaml")), !Catch::Contains("values"));  // 60,000 alone are within the limit
    CHECK_THAT(error_of(s.write("both.yaml", "include: [big1.yaml, big2.yaml]\nname: x\n")),
               Catch::Contains("big2.yaml' line 1") && Catch::Contains("more than 100000 values"));
    CHECK_THAT(error_of(s.write("flat.yaml", "name: x\neval: [" + zeros + "," + zeros + "]\n")),
               Catch::Contains("flat.yaml' line 2") && Catch::Contains("more than 100000 values"));
  }
}
