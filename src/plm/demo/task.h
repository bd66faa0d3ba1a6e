// A task of the demo dataset: what it asks, how its answers are scored, how often guessing is right, and the
// function that draws one sample (its media files and its JSONL object).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plm/demo/rng.h"

namespace plm::demo {

using Json = nlohmann::ordered_json;

/// Sizes shared by the tasks: pictures at the tiny model's tile size or twice it, 16-frame clips.
inline constexpr int kImageSize = 112;  // thumb+tile with 4 tiles: a 2x2 grid of native 56-pixel tiles
inline constexpr int kTileSize = 56;    // multi-image pictures and video frames (no resize in preprocessing)
inline constexpr int kVideoFrames = 16;
inline constexpr int kVideoFps = 8;

/// One sample being drawn: its identity, its random stream and where its media goes.
struct SampleContext {
  std::string root;  // the output folder; media paths in samples are relative to it (the datasets' root_dir)
  std::string task, split;
  int64_t index = 0;
  Rng rng;

  /// "media/<task>/<split>/<index>[_<k>].<ext>", relative to root (the folder exists).
  std::string media_path(const std::string& ext, int k = -1) const;
  /// root / relative.
  std::string absolute(const std::string& relative) const;
};

struct TaskSpec {
  std::string name;
  std::string media;        // "image", "multi_image", "video" or "text"
  std::string answer_type;  // "caption", "mcq", "short" or "rtloc" (see questions.h)
  /// Expected score of guessing: mcq 1/options; short the most likely answer's probability; caption the chance of
  /// guessing the exact caption; rtloc 0 here (make_demo measures a random segment's meanR on the test split).
  double chance = 0;
  std::array<int64_t, 3> counts{};  // train, val, test samples at scale 1
  bool stage1 = false;              // a caption task: in the stage-1 (warmup) datamix
  std::string description;
  Json (*make)(SampleContext&) = nullptr;
};

/// The tasks in a fixed order: image_tasks(), then video_tasks(), then text_tasks().
std::vector<TaskSpec> all_tasks();
std::vector<TaskSpec> image_tasks();
std::vector<TaskSpec> video_tasks();
std::vector<TaskSpec> text_tasks();

}  // namespace plm::demo
