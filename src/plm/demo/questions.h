// The question and answer forms of the demo tasks, and the extra fields that let an evaluator score a generated
// answer. PLM's loader ignores keys it does not know, so train, val and test samples all carry:
//   "task": the task name;
//   "answer_type": "mcq"     + "options": [option texts, in letter order], "answer": the correct letter ("B");
//                  "short"   + "answer": the expected answer ("3", "blue"), scored by exact match;
//                  "rtloc"   + "answer": [start, end] frame numbers, "num_frames": frames in the clip;
//                  "caption" + "answer": the reference caption.
// The assistant turn is what the model learns to say: the letter, the short answer, "[start, end]" or the caption.
#pragma once

#include <string>
#include <vector>

#include "plm/demo/task.h"

namespace plm::demo {

/// "A", "B", ... for option i.
std::string option_letter(int i);

/// PLM-VideoBench's multiple-choice prompt: "Question: q\nOptions:\n(A) o0\n(B) o1\nOnly give the best option."
std::string mcq_prompt(const std::string& question, const std::vector<std::string>& options);

/// {conversations: [human, assistant], task, answer_type, ...} for each answer form; `human` already holds the
/// media tags ("<image>\n", "<video>\n") and the prompt.
Json mcq_sample(const SampleContext& ctx, const std::string& human, const std::vector<std::string>& options,
                int correct);
Json short_sample(const SampleContext& ctx, const std::string& human, const std::string& answer);
Json rtloc_sample(const SampleContext& ctx, const std::string& human, int start, int end, int num_frames);
Json caption_sample(const SampleContext& ctx, const std::string& human, const std::string& caption);

/// The expected PLM-VideoBench RTLoc mean recall (eval/rtloc.h: continuous-interval IoU above 0.3, 0.5, 0.7,
/// 0.9) of a segment drawn uniformly from all [a, b], 0 <= a <= b < num_frames, against [gt_start, gt_end].
double rtloc_random_segment_score(int gt_start, int gt_end, int num_frames);

}  // namespace plm::demo
