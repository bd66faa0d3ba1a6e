// Multiple-choice scoring: plain accuracy and PLM-VideoBench FGQA's multi-binary accuracy (docs/reference.md 9).
#pragma once

#include <string>
#include <vector>

#include "plm/eval/results.h"

namespace plm::eval {

/// One multiple-choice prediction. FGQA asks each question several times with the options permuted; the variants
/// share a `qa_uid`.
struct MultipleChoiceSample {
  std::string qa_uid;      // groups the variants of one question (FGQA); any unique id otherwise
  std::string prediction;  // the model's answer text, read with parse_option_letter
  char answer = 'A';       // the correct option letter, uppercase
  int num_options = 0;     // options shown, 1..26
};

/// True when the prediction parses to the correct letter; a parse failure is wrong.
bool is_correct(const MultipleChoiceSample& sample);

/// metrics {"accuracy"}: the fraction of samples answered correctly.
TaskResult multiple_choice_accuracy(const std::vector<MultipleChoiceSample>& samples, const std::string& task);

/// FGQA, metrics {"multibinary_accuracy", "accuracy"}. Multi-binary accuracy (MBacc) groups the samples by qa_uid and
/// counts a group correct only when all its variants are correct (lmms-eval plm_fgqa_aggregate_results); "accuracy"
/// is per variant. num_instances counts variants, as lmms-eval does.
TaskResult fgqa_multibinary_accuracy(const std::vector<MultipleChoiceSample>& samples);

}  // namespace plm::eval
