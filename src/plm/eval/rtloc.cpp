#include "plm/eval/rtloc.h"

#include <stdexcept>

#include "plm/eval/segments.h"

namespace plm::eval {

RtlocScore score_rtloc_sample(const RtlocSample& sample, int num_video_frames) {
  if (sample.total_frames <= 0) {
    throw std::invalid_argument("RTLoc sample '" + sample.uid +
                                "' has total_frames <= 0; give the source video's frame count.");
  }
  const Segment ground_truth =
      rescale_segment({sample.start_frame, sample.end_frame}, sample.total_frames, num_video_frames);
  RtlocScore score;
  std::optional<Segment> predicted = parse_first_segment(sample.prediction);
  if (!predicted) {
    // lmms-eval plm_rtloc_process_results: a deliberately wrong window after the event, in source-video frames
    // (not rescaled), so the sample scores 0 while still counting in the mean.
    predicted = Segment{sample.end_frame + 10, sample.end_frame + 20};
    score.parse_failed = true;
  }
  score.iou = temporal_iou(*predicted, ground_truth);
  int hits = 0;
  for (double threshold : kRtlocIouThresholds) hits += score.iou > threshold ? 1 : 0;
  score.mean_recall = static_cast<double>(hits) / kRtlocIouThresholds.size();
  score.mean_precision = score.mean_recall;
  return score;
}

TaskResult score_rtloc(const std::vector<RtlocSample>& samples, int num_video_frames) {
  std::vector<double> recall, precision, iou;
  TaskResult result{"rtloc", {}, static_cast<int64_t>(samples.size()), 0};
  for (const RtlocSample& sample : samples) {
    const RtlocScore score = score_rtloc_sample(sample, num_video_frames);
    recall.push_back(score.mean_recall);
    precision.push_back(score.mean_precision);
    iou.push_back(score.iou);
    result.parse_failures += score.parse_failed ? 1 : 0;
  }
  result.metrics = {{"mean_recall", mean(recall)}, {"mean_precision", mean(precision)}, {"mIOU", mean(iou)}};
  return result;
}

}  // namespace plm::eval
