// SODA_c for PLM-VideoBench RDCap (region dense captioning): caption similarity times temporal IoU, matched in
// order by dynamic programming (Fujita et al., ECCV 2020, github.com/fujiso/SODA; as lmms-eval's plm_videobench
// rdcap_utils.py and eval_utils.py apply it; docs/reference.md 9).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "plm/eval/results.h"
#include "plm/eval/segments.h"

namespace plm::eval {

/// Similarity in [0, 1] of a predicted caption to a ground-truth caption. PLM-VideoBench uses an LLM judge's 0-10
/// score / 10 (Llama-3.3-70B); plug such a judge in here.
using CaptionSimilarity = std::function<double(const std::string& ground_truth, const std::string& prediction)>;

/// The default similarity: token_f1 (answer_matching.h). It needs no model and is deterministic. SODA's original
/// METEOR is a recall-weighted unigram F-measure with a fragmentation penalty and WordNet synonyms; token F1 over
/// normalised words is its closest model-free, dependency-free relative, lies in [0, 1] like judge/10, and shares
/// the answer normalisation of exact match. Numbers made with it are not comparable with the paper's judge scores.
double default_caption_similarity(const std::string& ground_truth, const std::string& prediction);

/// The largest total of scores[i][j] over matchings that pair rows with columns one-to-one and in order
/// (i < i' implies j < j'): SODA's chased_dp_assignment, dp[i][j] = max(dp[i-1][j], dp[i][j-1],
/// dp[i-1][j-1] + scores[i][j]). Scores must be >= 0. 0 for an empty matrix; throws std::invalid_argument when
/// rows differ in length.
double ordered_matching_score(const std::vector<std::vector<double>>& scores);

/// SODA_c's precision, recall and F-measure for one video.
struct SodaScore {
  double precision = 0;  // matched score / number of predictions
  double recall = 0;     // matched score / number of ground-truth captions
  double f_measure = 0;  // 2PR / (P + R); 0 when P + R = 0
};

/// SODA_c of one video: scores[g][p] = temporal_iou(gt g, pred p) * similarity(gt g caption, pred p caption),
/// matched with ordered_matching_score in the order the captions are given (lmms-eval does not sort; fujiso/SODA
/// sorts both lists by start time first). All zeros when `prediction` is empty. Throws std::invalid_argument when
/// `ground_truth` is empty.
SodaScore soda_c(const std::vector<DenseCaption>& ground_truth, const std::vector<DenseCaption>& prediction,
                 const CaptionSimilarity& similarity = default_caption_similarity);

/// One RDCap prediction, with the ground truth as the dataset gives it (source-video frames).
struct RdcapSample {
  std::string uid;
  std::string prediction;                    // the model's "[start, end]: description" lines, sampled frames
  std::vector<DenseCaption> dense_captions;  // ground truth, source-video frames, non-empty
  double total_frames = 0;                   // frames in the source video, > 0
};

/// The score of one RDCap sample.
struct RdcapScore {
  double soda_c = 0;          // SODA_c F-measure
  bool parse_failed = false;  // the prediction has no "[a, b]" segment; soda_c is then 0
};

/// Scores one sample: ground truth rescaled with rescale_segment, prediction read with parse_dense_captions.
/// Throws std::invalid_argument naming the uid when there are no ground-truth captions or total_frames <= 0.
RdcapScore score_rdcap_sample(const RdcapSample& sample,
                              const CaptionSimilarity& similarity = default_caption_similarity,
                              int num_video_frames = 32);

/// metrics {"SODA_c"}: the mean over samples of the per-video F-measure (lmms-eval averages per video; fujiso/SODA
/// pools the scores over the corpus). parse_failures counts samples with no parsed segment.
TaskResult score_rdcap(const std::vector<RdcapSample>& samples,
                       const CaptionSimilarity& similarity = default_caption_similarity, int num_video_frames = 32);

}  // namespace plm::eval
