#include "plm/demo/make_demo.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "plm/demo/demo_error.h"
#include "plm/demo/questions.h"
#include "plm/demo/tokenizer_training.h"
#include "plm/text/conversation.h"
#include "plm/text/region.h"
#include "plm/text/tokenizer.h"

namespace fs = std::filesystem;

namespace plm::demo {
namespace {

int64_t scaled(int64_t base, double scale) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(base) * scale));
}

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out.flush()) throw DemoError("cannot write '" + path.string() + "'; check that its folder is writable.");
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw DemoError("cannot create the folder '" + dir.string() + "' (" + ec.message() + ").");
}

// A sample's text as the tokenizer will see it: media tags removed, regions written out (preprocess.cpp's order).
void add_corpus_lines(const Json& sample, std::vector<std::string>& out) {
  std::vector<std::string> boxes;
  if (sample.contains("bbox"))
    for (const auto& b : sample["bbox"])
      boxes.push_back(
          text::format_bbox({b[0].get<double>(), b[1].get<double>(), b[2].get<double>(), b[3].get<double>()},
                            sample["width"].get<double>(), sample["height"].get<double>()));
  for (const auto& turn : sample["conversations"]) {
    std::string v =
        text::replace_all(text::replace_all(turn["value"].get<std::string>(), "<image>", ""), "<video>", "");
    out.push_back(boxes.empty() ? v : text::substitute_regions(v, boxes));
  }
}

std::string dataset_name(const std::string& task, const std::string& split) {
  return "demo_" + task + "_" + split;
}

// The datasets of recipes/demo/stage{1,2,3}.yaml's datamixes, at weight 1 (the recipes weight them): captions for
// the warm-up, captions, pictures and text in stage 2, every task but the captions in stage 3.
std::array<std::string, 3> stage_datamixes(const std::vector<TaskSpec>& tasks) {
  std::array<std::string, 3> mix;
  for (const auto& t : tasks) {
    const std::string entry = dataset_name(t.name, "train") + ":1";
    auto add = [&](std::string& m) { m += (m.empty() ? "" : ",") + entry; };
    if (t.stage1) add(mix[0]);
    if (t.media != "video") add(mix[1]);
    if (!t.stage1) add(mix[2]);
  }
  return mix;
}

std::string registry_yaml(const fs::path& root, const std::vector<TaskSpec>& tasks) {
  const auto mix = stage_datamixes(tasks);
  std::string y = "# The demo dataset written by `plm data make-demo` (docs/demo.md): demo_<task>_<split>.\n";
  for (int s = 0; s < 3; ++s)
    y += "# stage " + std::to_string(s + 1) + " datamix: " + mix[static_cast<size_t>(s)] + "\n";
  for (const auto& t : tasks)
    for (const auto& split : demo_splits()) {
      y += dataset_name(t.name, split) + ":\n    annotation: " + (root / split / (t.name + ".jsonl")).string() + "\n";
      if (t.media != "text") y += "    root_dir: " + root.string() + "\n";
    }
  return y;
}

// Draws every sample of every task and split on `threads` threads; out[task][split][index].
std::vector<std::array<std::vector<Json>, 3>> draw_samples(const fs::path& root, const std::vector<TaskSpec>& tasks,
                                                           const MakeDemoOptions& o) {
  struct Job {
    size_t task;
    size_t split;
    int64_t index;
  };
  std::vector<Job> jobs;
  std::vector<std::array<std::vector<Json>, 3>> out(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t)
    for (size_t s = 0; s < 3; ++s) {
      const int64_t n = scaled(tasks[t].counts[s], o.scale);
      out[t][s].resize(static_cast<size_t>(n));
      if (tasks[t].media != "text") make_dirs(root / "media" / tasks[t].name / demo_splits()[s]);
      for (int64_t i = 0; i < n; ++i) jobs.push_back({t, s, i});
    }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex mutex;
  auto work = [&] {
    for (size_t j; (j = next++) < jobs.size();) {
      const Job& job = jobs[j];
      const TaskSpec& spec = tasks[job.task];
      const std::string& split = demo_splits()[job.split];
      SampleContext ctx{root.string(), spec.name, split, job.index,
                        Rng::for_sample(o.seed, spec.name, split, job.index)};
      try {
        out[job.task][job.split][static_cast<size_t>(job.index)] = spec.make(ctx);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        next = jobs.size();
      }
    }
  };
  const unsigned n =
      o.threads > 0 ? static_cast<unsigned>(o.threads) : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < n; ++i) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace

MakeDemoSummary make_demo(const MakeDemoOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (o.scale <= 0) throw DemoError("make-demo --scale must be positive, not " + std::to_string(o.scale) + ".");
  fs::path root = fs::absolute(o.out).lexically_normal();
  if (root.filename().empty()) root = root.parent_path();
  make_dirs(root);
  for (const char* old : {"media", "train", "val", "test"}) fs::remove_all(root / old);
  for (const auto& split : demo_splits()) make_dirs(root / split);

  const std::vector<TaskSpec> tasks = all_tasks();
  auto samples = draw_samples(root, tasks, o);

  MakeDemoSummary summary;
  summary.out = root.string();
  Json tasks_json = Json::object();
  const std::vector<std::string> templates = template_text();
  std::vector<std::string> corpus = templates;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const TaskSpec& spec = tasks[t];
    TaskSummary ts{spec.name, spec.media, spec.answer_type, spec.chance, {}};
    for (size_t s = 0; s < 3; ++s) {
      std::string jsonl;
      for (const Json& j : samples[t][s]) jsonl += j.dump() + "\n";
      write_file(root / demo_splits()[s] / (spec.name + ".jsonl"), jsonl);
      ts.samples[s] = static_cast<int64_t>(samples[t][s].size());
    }
    for (const Json& j : samples[t][0]) {
      add_corpus_lines(j, corpus);
      // Every sample the model trains on also carries the chat template (the plm_sft system prompt alone is
      // 190 characters): counted once per sample, the tokenizer learns its words instead of spelling them out
      // in ~100 byte-level pieces, which made up half of a short sample's tokens and of the demo's compute.
      if (!spec.stage1) corpus.insert(corpus.end(), templates.begin(), templates.end());
    }
    if (spec.answer_type == "rtloc") {  // a random segment's expected meanR on this test split
      double sum = 0;
      for (const Json& j : samples[t][2])
        sum += rtloc_random_segment_score(j["answer"][0].get<int>(), j["answer"][1].get<int>(),
                                          j["num_frames"].get<int>());
      ts.chance = sum / static_cast<double>(samples[t][2].size());
    }
    Json datasets = Json::object();
    for (const auto& split : demo_splits()) datasets[split] = dataset_name(spec.name, split);
    tasks_json[spec.name] = {{"media", spec.media},  {"answer_type", spec.answer_type},
                             {"chance", ts.chance},  {"train", ts.samples[0]},
                             {"val", ts.samples[1]}, {"test", ts.samples[2]},
                             {"datasets", datasets}, {"description", spec.description}};
    summary.tasks.push_back(ts);
  }

  const fs::path tokenizer = root / "tokenizer.model";
  train_tokenizer(corpus, o.vocab_size, tokenizer.string());
  summary.vocab_size = text::load_tokenizer(tokenizer.string())->vocab_size();

  write_file(root / "datasets.yaml", registry_yaml(root, tasks));
  const auto mix = stage_datamixes(tasks);
  const Json meta = {{"seed", o.seed},
                     {"scale", o.scale},
                     {"vocab_size", summary.vocab_size},
                     {"image_size", kImageSize},
                     {"tile_size", kTileSize},
                     {"video_frames", kVideoFrames},
                     {"video_fps", kVideoFps},
                     {"datamix", {{"stage1", mix[0]}, {"stage2", mix[1]}, {"stage3", mix[2]}}},
                     {"tasks", tasks_json}};
  write_file(root / "tasks.json", meta.dump(2) + "\n");
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace plm::demo
