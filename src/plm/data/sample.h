// One line of a PLM JSONL dataset (docs/reference.md 4.1), parsed and checked, before any media is read.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "plm/common/reasoned_error.h"
#include "plm/text/conversation.h"

namespace plm::data {

/// A sample that cannot be used. The reason keys the loader counts by: "bad_encoding", "bad_json", "bad_schema",
/// "role_error", "no_answer", "too_long", "image_tag_mismatch", "bbox_error", plus media::MediaError's reasons.
struct SampleError : ReasonedError {
  using ReasonedError::ReasonedError;
};

/// The fields PLM reads. Paths are as written in the file (relative to the dataset's root_dir).
struct Sample {
  std::vector<text::Turn> conversations;  // from "conversations", or [human "", assistant text] for "text"
  std::vector<std::string> images;        // "image": one path, or several (multi-image)
  std::optional<std::string> video;       // "video"
  std::optional<double> start_time, end_time;
  std::map<int64_t, std::array<double, 4>> bbox_map;  // frame index -> [x1, y1, x2, y2] pixels (video regions)
  // bbox_map entries that can never be drawn and are left out, as the reference never matches them: a null box, or
  // a key that is not a frame index in its decimal form (str(index) in the reference: "7", not "07" or "x").
  int64_t bbox_map_ignored = 0;
  std::vector<std::array<double, 4>> bbox;  // [x, y, w, h] pixels, referenced as <|bboxK|> (image regions)
  std::optional<double> width, height;      // required with bbox
};

/// The longest row read or parsed, in bytes. A PLM row is a few kB (a stage-3 sample of 11,520 tokens is ~50 kB of
/// text); parsing costs up to 48x a row's bytes, so this keeps one hostile row under ~0.8 GB per loader worker.
constexpr uint64_t kMaxRowBytes = uint64_t{16} << 20;

/// The message of a row longer than kMaxRowBytes (SampleError "too_long").
std::string row_too_long();

/// Parses one JSON line. Non-string assistant values become Python's str() of them (PLM calls str(value)); a human
/// value must be a string. Throws SampleError, whose message the caller prefixes with the row's file:line; a line
/// over kMaxRowBytes is "too_long" before anything is parsed.
/// Memory: at most 48 bytes per byte of the line plus a constant (the JSON document and the Sample; measured 30x
/// to 36x, depending on where the vectors' growth stands, for rows of nested lists or of many one-letter image
/// paths; tests/tooling/parser_memory.py checks it).
Sample parse_sample(const std::string& line);

}  // namespace plm::data
