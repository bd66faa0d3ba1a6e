// `plm data make-demo`: a deterministic synthetic dataset that the tiny PLM (configs/models/tiny.yaml) can learn
// through all three stages on a CPU. docs/demo.md describes the tasks and the layout:
//   DIR/{train,val,test}/<task>.jsonl   PLM JSONL samples plus evaluation fields (questions.h)
//   DIR/media/<task>/<split>/...        PNG pictures and MPEG-4 .mp4 clips, relative to DIR (the root_dir)
//   DIR/datasets.yaml                   registry entries demo_<task>_<split> (absolute paths)
//   DIR/tasks.json                      per task: media, answer_type, chance, split sizes, description
//   DIR/tokenizer.model                 sentencepiece BPE with PLM's special tokens (tokenizer_training.h)
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace plm::demo {

struct MakeDemoOptions {
  std::string out;       // the dataset folder (created; earlier demo files in it are replaced)
  uint64_t seed = 1234;  // same seed, scale and vocab_size -> byte-identical files (datasets.yaml: same DIR)
  double scale = 1.0;    // multiplies every split's sample count (at least 1 sample each)
  int vocab_size = 512;  // tokenizer pieces, 256 of them byte-fallback pieces
  int threads = 0;       // sample-drawing threads; 0 = one per core. The files do not depend on it
};

struct TaskSummary {
  std::string name, media, answer_type;
  double chance = 0;
  std::array<int64_t, 3> samples{};  // train, val, test
};

struct MakeDemoSummary {
  std::string out;  // absolute
  std::vector<TaskSummary> tasks;
  int vocab_size = 0;
  double seconds = 0;
};

/// The splits, in file order.
inline const std::array<std::string, 3>& demo_splits() {
  static const std::array<std::string, 3> s{"train", "val", "test"};
  return s;
}

/// Writes the dataset. Throws DemoError naming the path that cannot be written.
MakeDemoSummary make_demo(const MakeDemoOptions& options);

}  // namespace plm::demo
