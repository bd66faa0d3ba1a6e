// Scoring one task's predictions by the samples' answer type with the metric library (multiple_choice.h, rtloc.h,
// soda.h, answer_matching.h, judge_records.h; docs/reference.md 9).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "plm/eval/eval_sample.h"
#include "plm/eval/judge_records.h"
#include "plm/eval/results.h"

namespace plm::eval {

/// What one prediction scored.
struct SampleScore {
  double score = 0;             // mcq, short: 1 or 0; rtloc: mean recall; caption, judge: token F1; rdcap: SODA_c
  std::optional<bool> correct;  // mcq and short only
  bool parse_failed = false;    // mcq: no option letter; rtloc: no "[a, b]"; rdcap: no segment
};

struct TaskScores {
  TaskResult result;
  std::vector<SampleScore> samples;  // in the order given
  std::vector<JudgeRecord> judge;    // judge tasks: one record per sample, for write_judge_records
};

/// Scores `predictions[i]` against `samples[i]` (same length, one task), by their common answer type:
///  - mcq: metrics {"accuracy"}, or FGQA's {"multibinary_accuracy", "accuracy"} when every sample has a qa_uid;
///  - short: {"exact_match"};
///  - rtloc: {"mean_recall", "mean_precision", "mIOU"} with num_video_frames = the samples' num_frames;
///  - caption: {"token_f1"};
///  - rdcap: {"SODA_c"} (token F1 as the caption similarity, soda.h), num_video_frames = num_frames;
///  - judge: {"token_f1"} plus the judge records (the paper's number needs the external judge).
/// Throws data::SampleError naming the sample's origin when the task mixes answer types or rtloc/rdcap frame
/// counts, and std::invalid_argument when the lengths differ.
TaskScores score_task(const std::string& task, const std::vector<const EvalSample*>& samples,
                      const std::vector<std::string>& predictions);

}  // namespace plm::eval
