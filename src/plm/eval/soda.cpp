#include "plm/eval/soda.h"

#include <algorithm>
#include <stdexcept>

#include "plm/eval/answer_matching.h"

namespace plm::eval {

double default_caption_similarity(const std::string& ground_truth, const std::string& prediction) {
  return token_f1(ground_truth, prediction);
}

double ordered_matching_score(const std::vector<std::vector<double>>& scores) {
  if (scores.empty() || scores.front().empty()) return 0.0;
  const size_t cols = scores.front().size();
  // best[j + 1]: the best total for rows 0..i and columns 0..j; the zero border equals SODA's -1 states because
  // scores are non-negative.
  std::vector<double> previous(cols + 1, 0.0), best(cols + 1, 0.0);
  for (const std::vector<double>& row : scores) {
    if (row.size() != cols) throw std::invalid_argument("ordered_matching_score: rows differ in length.");
    for (size_t j = 0; j < cols; ++j) {
      best[j + 1] = std::max({previous[j + 1], best[j], previous[j] + row[j]});
    }
    std::swap(previous, best);
  }
  return previous[cols];
}

SodaScore soda_c(const std::vector<DenseCaption>& ground_truth, const std::vector<DenseCaption>& prediction,
                 const CaptionSimilarity& similarity) {
  if (ground_truth.empty()) throw std::invalid_argument("soda_c: the ground truth has no captions.");
  if (prediction.empty()) return {};
  std::vector<std::vector<double>> scores(ground_truth.size(), std::vector<double>(prediction.size()));
  for (size_t g = 0; g < ground_truth.size(); ++g) {
    for (size_t p = 0; p < prediction.size(); ++p) {
      scores[g][p] = temporal_iou(ground_truth[g].segment, prediction[p].segment) *
                     similarity(ground_truth[g].caption, prediction[p].caption);
    }
  }
  const double matched = ordered_matching_score(scores);
  SodaScore score;
  score.precision = matched / static_cast<double>(prediction.size());
  score.recall = matched / static_cast<double>(ground_truth.size());
  const double sum = score.precision + score.recall;
  score.f_measure = sum > 0 ? 2 * score.precision * score.recall / sum : 0.0;
  return score;
}

RdcapScore score_rdcap_sample(const RdcapSample& sample, const CaptionSimilarity& similarity, int num_video_frames) {
  if (sample.dense_captions.empty() || sample.total_frames <= 0) {
    throw std::invalid_argument("RDCap sample '" + sample.uid +
                                "' needs ground-truth dense_captions and total_frames > 0; check the dataset row.");
  }
  std::vector<DenseCaption> ground_truth;
  ground_truth.reserve(sample.dense_captions.size());
  for (const DenseCaption& gt : sample.dense_captions) {
    ground_truth.push_back({rescale_segment(gt.segment, sample.total_frames, num_video_frames), gt.caption});
  }
  const std::vector<DenseCaption> prediction = parse_dense_captions(sample.prediction);
  return RdcapScore{soda_c(ground_truth, prediction, similarity).f_measure, prediction.empty()};
}

TaskResult score_rdcap(const std::vector<RdcapSample>& samples, const CaptionSimilarity& similarity,
                       int num_video_frames) {
  TaskResult result{"rdcap", {}, static_cast<int64_t>(samples.size()), 0};
  std::vector<double> scores;
  scores.reserve(samples.size());
  for (const RdcapSample& sample : samples) {
    const RdcapScore score = score_rdcap_sample(sample, similarity, num_video_frames);
    scores.push_back(score.soda_c);
    result.parse_failures += score.parse_failed ? 1 : 0;
  }
  result.metrics = {{"SODA_c", mean(scores)}};
  return result;
}

}  // namespace plm::eval
