// Temporal segments in model answers: RTLoc's "[a, b]" and RDCap's "[start, end]: description" lines
// (docs/reference.md 9; lmms-eval tasks/plm_videobench rtloc_utils.py and eval_utils.py).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace plm::eval {

/// A temporal segment in frame numbers. The endpoints may come in either order: temporal_iou orders them.
struct Segment {
  double start = 0;
  double end = 0;
};

/// One dense caption: a segment and what happens in it.
struct DenseCaption {
  Segment segment;
  std::string caption;
};

/// IoU of two segments as continuous intervals, as lmms-eval's plm_videobench calculate_iou computes it:
/// intersection / (union + 1e-8), with union = min(span of both, sum of lengths). Touching or single-frame
/// ([5, 5]) segments therefore have IoU 0. The 1e-8 keeps parity (an IoU of exactly t is never above t).
double temporal_iou(const Segment& a, const Segment& b);

/// A segment in source-video frames moved to the `num_frames` uniformly sampled frames of a `total_frames` video, as
/// PLM-VideoBench rescales its ground truth: each endpoint f becomes int(f / (total_frames / num_frames)), truncated
/// toward zero. Requires total_frames > 0 (the task scorers check it per sample).
Segment rescale_segment(const Segment& source, double total_frames, int num_frames);

/// The first "[a, b]" in `text` (RTLoc answers). a and b are unsigned decimals: digits with an optional "." and
/// digits ("12", "3.5"); between them a comma then optional whitespace; nothing else inside the brackets, so
/// "[ 3, 7]", "[3 ,7]", "[-1, 5]" and "[3., 7]" do not match and the search goes on. std::nullopt when no match.
std::optional<Segment> parse_first_segment(std::string_view text);

/// Dense captions from an RDCap answer, e.g. "[0, 5]: A man picks up a cup.\n[6, 12]: He drinks from it."
/// Format (lmms-eval's extract_delta_segments): every "[a, b]" with integer a, b (a comma, optional whitespace) starts
/// a caption that runs to the next '[' or the end of text. Each caption has ':' replaced by ' ', "\nFrame " removed,
/// surrounding whitespace trimmed, one trailing ',' removed, newlines replaced by spaces. Text before the first
/// segment and brackets that do not match (floats, "[object]") are skipped; a '[' always ends the caption before it.
/// An answer with no segment gives an empty list (the caller scores that as a parse failure).
std::vector<DenseCaption> parse_dense_captions(std::string_view text);

}  // namespace plm::eval
