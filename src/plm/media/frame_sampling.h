// Which frames of a video clip PLM looks at (docs/reference.md 4.5 steps 2-4, core/transforms/video_transform.py
// `load_video` and `uniform_sample`). Pure arithmetic: the Python double operations are reproduced one for one,
// Python's round() included (half to even), so the indices equal the reference's for every input.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace plm::media {

/// `n` of `m` positions spread evenly: [int(round(i * (m-1)/(n-1))) for i in range(n)] with Python's
/// round-half-to-even (stride 0 when n == 1; empty when n <= 0). Example: m = 6, n = 5 -> [0, 1, 2, 4, 5].
/// Throws std::invalid_argument when n > m (the reference asserts n <= m).
std::vector<int64_t> uniform_sample(int64_t m, int64_t n);

/// The frame indices the reference decodes for a clip of a video with `num_frames` frames at `fps` (torchcodec's
/// average_fps): start = int(start_s * fps) or 0; end = min(int(end_s * fps) or num_frames - 1, num_frames - 1);
/// start > end swaps them, start == end makes end = start + 1 (which can be num_frames: docs/reference.md 11 item 9,
/// kept); 1-fps candidates range(start, end + 1, int(round(fps))); more than `max_frames` candidates -> `max_frames` of
/// them uniformly; fewer -> min(max_frames, end - start + 1) of all frames start..end uniformly; else all candidates.
/// Indices come in increasing order and may be negative when start_s or end_s is (the reference passes them on).
/// Throws std::invalid_argument where the reference raises: fps at or below 0.5 (a zero stride for range()), or a
/// non-finite or out-of-range start/end product (Python's int() of inf/nan).
std::vector<int64_t> sample_frame_indices(double fps, int64_t num_frames, std::optional<double> start_s,
                                          std::optional<double> end_s, int64_t max_frames);

}  // namespace plm::media
