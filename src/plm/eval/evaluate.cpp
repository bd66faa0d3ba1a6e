#include "plm/eval/evaluate.h"

#include <chrono>

#include <nlohmann/json.hpp>

#include "plm/common/log.h"
#include "plm/infer/infer_error.h"

namespace plm::eval {
namespace {

infer::PreparedPrompt prepare(const infer::Generator& generator, const data::Preprocessor& media, const EvalSample& s) {
  return generator.prompts().encode(s.question, media.load_media(s.sample, s.root_dir));
}

/// The option letter whose continuation is likeliest after the prompt.
std::string likeliest_letter(infer::Generator& generator, const infer::PreparedPrompt& prompt, size_t num_options) {
  std::vector<std::vector<text::TokenId>> letters;
  for (size_t k = 0; k < num_options; ++k)
    letters.push_back(generator.prompts().tokenizer().encode(std::string(1, static_cast<char>('A' + k))));
  const std::vector<infer::ContinuationScore> scores = generator.score(prompt, letters);
  size_t best = 0;
  for (size_t k = 1; k < scores.size(); ++k)
    if (scores[k].sum_logprob > scores[best].sum_logprob) best = k;
  return std::string(1, static_cast<char>('A' + best));
}

}  // namespace

double EvalReport::samples_per_s() const {
  return seconds > 0 ? static_cast<double>(predictions.size()) / seconds : 0;
}

EvalReport evaluate(infer::Generator& generator, const data::Preprocessor& media,
                    const std::vector<EvalSample>& samples, const EvalOptions& options) {
  if (options.batch_size < 1) throw infer::GenerateError("bad_option", "--batch-size must be at least 1.");
  if (options.mcq_scoring != "generate" && options.mcq_scoring != "loglik")
    throw infer::GenerateError("bad_option", "--mcq-scoring is '" + options.mcq_scoring + "'; use generate or loglik.");
  const auto start = std::chrono::steady_clock::now();
  EvalReport report;
  std::vector<std::string> predictions(samples.size());
  std::vector<size_t> pending;
  std::vector<infer::PreparedPrompt> prompts;
  size_t done = 0;
  auto flush = [&] {
    if (prompts.empty()) return;
    const infer::GenerateResult r = generator.generate(prompts);
    for (size_t k = 0; k < pending.size(); ++k) predictions[pending[k]] = r.generations[k].text;
    report.generated_tokens += r.timing.generated_tokens;
    done += pending.size();
    pending.clear();
    prompts.clear();
    log::info("evaluated {}/{} samples", done, samples.size());
  };
  for (size_t i = 0; i < samples.size(); ++i) {
    const EvalSample& s = samples[i];
    infer::PreparedPrompt prompt = prepare(generator, media, s);
    if (options.mcq_scoring == "loglik" && s.type == AnswerType::mcq) {
      predictions[i] = likeliest_letter(generator, prompt, s.options.size());
      ++done;
      continue;
    }
    pending.push_back(i);
    prompts.push_back(std::move(prompt));
    if (static_cast<int64_t>(prompts.size()) == options.batch_size) flush();
  }
  flush();

  // Score per task, tasks in order of first appearance.
  std::vector<std::string> order;
  std::map<std::string, std::vector<size_t>> by_task;
  for (size_t i = 0; i < samples.size(); ++i) {
    auto& rows = by_task[samples[i].task];
    if (rows.empty()) order.push_back(samples[i].task);
    rows.push_back(i);
  }
  report.predictions.resize(samples.size());
  for (const std::string& task : order) {
    std::vector<const EvalSample*> group;
    std::vector<std::string> answers;
    for (const size_t i : by_task[task]) {
      group.push_back(&samples[i]);
      answers.push_back(predictions[i]);
    }
    TaskScores scores = score_task(task, group, answers);
    report.results.push_back(scores.result);
    for (size_t k = 0; k < group.size(); ++k) {
      const EvalSample& s = *group[k];
      const SampleScore& sc = scores.samples[k];
      report.predictions[by_task[task][k]] = {s.id,        s.task,     s.question, answers[k],
                                              s.reference, sc.correct, sc.score,   sc.parse_failed};
    }
    if (!scores.judge.empty()) report.judge[task] = std::move(scores.judge);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::string prediction_line(const PredictionRecord& r) {
  const nlohmann::json j{{"id", r.id},
                         {"task", r.task},
                         {"question", r.question},
                         {"prediction", r.prediction},
                         {"reference", r.reference},
                         {"correct", r.correct ? nlohmann::json(*r.correct) : nlohmann::json(nullptr)},
                         {"score", r.score},
                         {"parse_failed", r.parse_failed}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace plm::eval
