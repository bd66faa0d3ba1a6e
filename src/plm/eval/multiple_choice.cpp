#include "plm/eval/multiple_choice.h"

#include <map>

#include "plm/eval/answer_matching.h"

namespace plm::eval {
namespace {

int64_t count_parse_failures(const std::vector<MultipleChoiceSample>& samples) {
  int64_t failures = 0;
  for (const MultipleChoiceSample& s : samples) failures += parse_option_letter(s.prediction, s.num_options) ? 0 : 1;
  return failures;
}

double fraction_correct(const std::vector<MultipleChoiceSample>& samples) {
  std::vector<double> correct;
  correct.reserve(samples.size());
  for (const MultipleChoiceSample& s : samples) correct.push_back(is_correct(s) ? 1.0 : 0.0);
  return mean(correct);
}

}  // namespace

bool is_correct(const MultipleChoiceSample& sample) {
  const std::optional<char> letter = parse_option_letter(sample.prediction, sample.num_options);
  return letter && *letter == sample.answer;
}

TaskResult multiple_choice_accuracy(const std::vector<MultipleChoiceSample>& samples, const std::string& task) {
  return TaskResult{task,
                    {{"accuracy", fraction_correct(samples)}},
                    static_cast<int64_t>(samples.size()),
                    count_parse_failures(samples)};
}

TaskResult fgqa_multibinary_accuracy(const std::vector<MultipleChoiceSample>& samples) {
  std::map<std::string, bool> group_correct;  // qa_uid -> all variants so far correct
  for (const MultipleChoiceSample& s : samples) {
    auto [it, inserted] = group_correct.emplace(s.qa_uid, true);
    it->second = it->second && is_correct(s);
  }
  std::vector<double> groups;
  groups.reserve(group_correct.size());
  for (const auto& [qa_uid, correct] : group_correct) groups.push_back(correct ? 1.0 : 0.0);
  return TaskResult{"fgqa",
                    {{"multibinary_accuracy", mean(groups)}, {"accuracy", fraction_correct(samples)}},
                    static_cast<int64_t>(samples.size()),
                    count_parse_failures(samples)};
}

}  // namespace plm::eval
