// PLM-VideoBench RTLoc: region temporal localisation scored by recall at IoU thresholds (docs/reference.md 9;
// lmms-eval tasks/plm_videobench/rtloc/rtloc_utils.py).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "plm/eval/results.h"

namespace plm::eval {

/// The IoU thresholds whose recalls RTLoc averages; a prediction counts at t when IoU > t (strictly).
inline constexpr std::array<double, 4> kRtlocIouThresholds = {0.3, 0.5, 0.7, 0.9};

/// One RTLoc prediction, with the ground truth as the dataset gives it (frames of the source video).
struct RtlocSample {
  std::string uid;
  std::string prediction;  // the model's answer, in frames of the num_video_frames sampled frames, e.g. "[12, 18]"
  double start_frame = 0;  // ground-truth event, source-video frames
  double end_frame = 0;
  double total_frames = 0;  // frames in the source video, > 0
};

/// The score of one sample. With one predicted and one ground-truth segment, precision equals recall.
struct RtlocScore {
  double mean_recall = 0;     // mean over kRtlocIouThresholds of [iou > t]
  double mean_precision = 0;  // same as mean_recall here; reported because lmms-eval reports it
  double iou = 0;
  bool parse_failed = false;
};

/// Scores one sample. The ground truth is rescaled to the sampled frames with rescale_segment; the prediction is the
/// first "[a, b]" (parse_first_segment). On a parse failure the prediction becomes [end_frame + 10, end_frame + 20]
/// in *source* frames, as lmms-eval's plm_rtloc_process_results does: a segment after the event, so IoU is 0.
/// Throws std::invalid_argument naming the uid when total_frames <= 0.
RtlocScore score_rtloc_sample(const RtlocSample& sample, int num_video_frames = 32);

/// metrics {"mean_recall", "mean_precision", "mIOU"}, each the mean over samples; parse_failures counts samples
/// that fell back to the wrong segment.
TaskResult score_rtloc(const std::vector<RtlocSample>& samples, int num_video_frames = 32);

}  // namespace plm::eval
