#include "plm/media/frame_sampling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace plm::media {
namespace {

// Python's int(x) for a float: truncation toward zero. Values outside +-2^62 would be Python big ints that no
// frame index can use; they (and inf/nan, where Python raises) are refused.
int64_t py_int(double x, const char* what) {
  if (!std::isfinite(x) || std::fabs(x) >= 4.6e18)
    throw std::invalid_argument(std::string(what) + " is " + std::to_string(x) +
                                ", which is not a usable frame number");
  return static_cast<int64_t>(std::trunc(x));
}

// Python's round(x) for a float: nearest integer, ties to even. nearbyint does exactly that in the default
// rounding mode (FE_TONEAREST), which nothing in plm changes.
int64_t py_round(double x, const char* what) {
  return py_int(std::nearbyint(x), what);
}

}  // namespace

std::vector<int64_t> uniform_sample(int64_t m, int64_t n) {
  if (n > m)
    throw std::invalid_argument("uniform_sample: cannot take " + std::to_string(n) + " of " + std::to_string(m));
  const double stride = n > 1 ? static_cast<double>(m - 1) / static_cast<double>(n - 1) : 0.0;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(py_round(static_cast<double>(i) * stride, "a sample position"));
  return out;
}

std::vector<int64_t> sample_frame_indices(double fps, int64_t num_frames, std::optional<double> start_s,
                                          std::optional<double> end_s, int64_t max_frames) {
  int64_t start = start_s ? py_int(*start_s * fps, "the clip start") : 0;
  int64_t end = end_s ? py_int(*end_s * fps, "the clip end") : num_frames - 1;
  end = std::min(end, num_frames - 1);
  if (start > end) {
    std::swap(start, end);
  } else if (start == end) {
    end = start + 1;
  }
  // sampling_fps is 1: int(round(float(fps) / 1)).
  const int64_t step = py_round(fps, "the frame rate");
  if (step == 0)
    throw std::invalid_argument("a frame rate of " + std::to_string(fps) +
                                " fps gives a 1-fps sampling stride of 0 (the reference's range() refuses it)");
  // range(start, end + 1, step), never materialised: its length, and element i = start + i * step. A hostile
  // start or end time (1e17 s) would otherwise list billions of frame numbers (memory: O(max_frames) now).
  const int64_t span = end + 1 - start;
  const int64_t count =
      step > 0 ? (span > 0 ? (span + step - 1) / step : 0) : (span < 0 ? (-span + (-step) - 1) / (-step) : 0);
  const auto candidate = [&](int64_t i) { return start + i * step; };

  if (count > max_frames) {
    std::vector<int64_t> picked;
    for (int64_t i : uniform_sample(count, max_frames)) picked.push_back(candidate(i));
    return picked;
  }
  if (count < max_frames) {
    const int64_t clip_frames = end - start + 1;
    std::vector<int64_t> picked = uniform_sample(clip_frames, std::min(max_frames, clip_frames));
    for (int64_t& i : picked) i += start;
    return picked;
  }
  std::vector<int64_t> candidates;
  for (int64_t i = 0; i < count; ++i) candidates.push_back(candidate(i));
  return candidates;
}

}  // namespace plm::media
