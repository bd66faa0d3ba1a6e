#include "plm/eval/task_scoring.h"

#include <stdexcept>

#include "plm/eval/answer_matching.h"
#include "plm/eval/multiple_choice.h"
#include "plm/eval/rtloc.h"
#include "plm/eval/soda.h"

namespace plm::eval {
namespace {

using Samples = std::vector<const EvalSample*>;
using Predictions = std::vector<std::string>;

void score_mcq(const Samples& samples, const Predictions& predictions, TaskScores& out) {
  std::vector<MultipleChoiceSample> mc;
  bool fgqa = true;
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = *samples[i];
    fgqa = fgqa && !s.qa_uid.empty();
    mc.push_back(
        {s.qa_uid.empty() ? s.id : s.qa_uid, predictions[i], s.answer_letter, static_cast<int>(s.options.size())});
    const bool correct = is_correct(mc.back());
    out.samples.push_back(
        {correct ? 1.0 : 0.0, correct, !parse_option_letter(predictions[i], static_cast<int>(s.options.size()))});
  }
  out.result = fgqa ? fgqa_multibinary_accuracy(mc) : multiple_choice_accuracy(mc, "");
}

// rtloc and rdcap score in the samples' sampled-frame space, which score_rtloc/score_rdcap take per call.
int common_num_frames(const Samples& samples, const std::string& task) {
  for (const EvalSample* s : samples)
    if (s->num_frames != samples.front()->num_frames)
      throw data::SampleError("bad_schema", s->origin + ": task '" + task + "' mixes num_frames " +
                                                std::to_string(samples.front()->num_frames) + " and " +
                                                std::to_string(s->num_frames) + "; evaluate them as separate tasks.");
  return samples.empty() ? 32 : samples.front()->num_frames;
}

void score_rtloc_task(const Samples& samples, const Predictions& predictions, const std::string& task,
                      TaskScores& out) {
  const int frames = common_num_frames(samples, task);
  std::vector<RtlocSample> rt;
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = *samples[i];
    rt.push_back({s.id, predictions[i], s.segment.start, s.segment.end, s.total_frames});
    const RtlocScore score = score_rtloc_sample(rt.back(), frames);
    out.samples.push_back({score.mean_recall, std::nullopt, score.parse_failed});
  }
  out.result = score_rtloc(rt, frames);
}

void score_rdcap_task(const Samples& samples, const Predictions& predictions, const std::string& task,
                      TaskScores& out) {
  const int frames = common_num_frames(samples, task);
  std::vector<RdcapSample> rd;
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = *samples[i];
    rd.push_back({s.id, predictions[i], s.dense_captions, s.total_frames});
    const RdcapScore score = score_rdcap_sample(rd.back(), default_caption_similarity, frames);
    out.samples.push_back({score.soda_c, std::nullopt, score.parse_failed});
  }
  out.result = score_rdcap(rd, default_caption_similarity, frames);
}

// short, caption and judge: a per-sample value averaged.
void score_text(const Samples& samples, const Predictions& predictions, AnswerType type, const std::string& task,
                TaskScores& out) {
  std::vector<double> values;
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = *samples[i];
    if (type == AnswerType::short_answer) {
      const bool correct = exact_match(predictions[i], s.answer_text);
      out.samples.push_back({correct ? 1.0 : 0.0, correct, false});
    } else {
      out.samples.push_back({token_f1(s.answer_text, predictions[i]), std::nullopt, false});
    }
    values.push_back(out.samples.back().score);
    if (type == AnswerType::judge)
      out.judge.push_back({s.id, s.question, predictions[i], s.answer_text, s.metadata_json});
  }
  out.result = {task,
                {{type == AnswerType::short_answer ? "exact_match" : "token_f1", mean(values)}},
                static_cast<int64_t>(samples.size()),
                0};
}

}  // namespace

TaskScores score_task(const std::string& task, const std::vector<const EvalSample*>& samples,
                      const std::vector<std::string>& predictions) {
  if (samples.size() != predictions.size())
    throw std::invalid_argument("score_task: " + std::to_string(samples.size()) + " samples but " +
                                std::to_string(predictions.size()) + " predictions.");
  TaskScores out;
  if (samples.empty()) {
    out.result.task = task;
    return out;
  }
  const AnswerType type = samples.front()->type;
  for (const EvalSample* s : samples)
    if (s->type != type)
      throw data::SampleError("bad_schema", s->origin + ": task '" + task + "' mixes answer types " + to_string(type) +
                                                " and " + to_string(s->type) +
                                                "; give the samples different 'task' names.");
  switch (type) {
    case AnswerType::mcq:
      score_mcq(samples, predictions, out);
      break;
    case AnswerType::rtloc:
      score_rtloc_task(samples, predictions, task, out);
      break;
    case AnswerType::rdcap:
      score_rdcap_task(samples, predictions, task, out);
      break;
    case AnswerType::short_answer:
    case AnswerType::caption:
    case AnswerType::judge:
      score_text(samples, predictions, type, task, out);
      break;
  }
  out.result.task = task;
  return out;
}

}  // namespace plm::eval
