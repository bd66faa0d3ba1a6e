// Task evaluation with a model: every sample's prompt (its question and media, preprocessed as in training) is
// answered greedily in batches by infer::Generator, or, for multiple choice in log-likelihood mode, the option
// letter the model finds most likely is taken; the answers are then scored per task (task_scoring.h).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "plm/data/preprocess.h"
#include "plm/eval/task_scoring.h"
#include "plm/infer/generate.h"

namespace plm::eval {

struct EvalOptions {
  int64_t batch_size = 8;  // prompts per generate() call
  /// "generate": mcq answers are generated and read with parse_option_letter, as lmms-eval does;
  /// "loglik": Generator::score of each option letter ("A", "B", ...) after the prompt, the likeliest is the answer
  /// (no parse failures). The demo's and PLM-VideoBench's assistants answer with the letter alone.
  std::string mcq_scoring = "generate";
};

/// One sample's outcome, for the predictions file.
struct PredictionRecord {
  std::string id, task, question, prediction, reference;  // reference: the last assistant turn
  std::optional<bool> correct;                            // mcq and short
  double score = 0;                                       // SampleScore::score
  bool parse_failed = false;
};

struct EvalReport {
  std::vector<TaskResult> results;                        // one per task, in order of first appearance
  std::vector<PredictionRecord> predictions;              // in sample order
  std::map<std::string, std::vector<JudgeRecord>> judge;  // task -> records, for judge tasks
  double seconds = 0;                                     // media loading, generation and scoring
  int64_t generated_tokens = 0;
  double samples_per_s() const;
};

/// Answers and scores `samples`. `media` preprocesses as the checkpoint's settings say (the same options as the
/// generator's PromptEncoder): Preprocessor::load_media with the sample's root_dir, so video regions (bbox_map) are
/// drawn as in training. Throws infer::GenerateError for a bad option, data::MediaSampleError naming unreadable
/// media, data::SampleError for a task whose samples cannot be scored together.
EvalReport evaluate(infer::Generator& generator, const data::Preprocessor& media,
                    const std::vector<EvalSample>& samples, const EvalOptions& options);

/// One JSON line (no newline): {"id", "task", "question", "prediction", "reference", "correct" (bool or null),
/// "score", "parse_failed"}. Invalid UTF-8 (a cut multi-byte token) becomes U+FFFD.
std::string prediction_line(const PredictionRecord& record);

}  // namespace plm::eval
