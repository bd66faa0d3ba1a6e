// One benchmark sample read from a PLM JSONL line (docs/reference.md 4.1, 9): the prompt the model answers (question
// and media) and what its answer is scored against. The fields are those of the demo dataset (docs/demo.md "Evaluation
// fields") and PLM-VideoBench's (FGQA qa_uid, RTLoc/RDCap frames, SGQA/RCap judge inputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plm/data/sample.h"
#include "plm/eval/segments.h"

namespace plm::eval {

/// How an answer is scored.
enum class AnswerType {
  mcq,           // option letter; accuracy, or FGQA multi-binary accuracy when samples carry qa_uid
  short_answer,  // exact match after normalize_answer
  rtloc,         // "[start, end]" frames; RTLoc mean recall
  caption,       // token F1 against the reference text (reported, not an accuracy)
  rdcap,         // "[start, end]: caption" lines; SODA_c with token F1 as the caption similarity
  judge,         // SGQA / RCap: open answers for an external LLM judge (token F1 reported meanwhile)
};

/// "mcq", "short", "rtloc", "caption", "rdcap", "judge".
const char* to_string(AnswerType type);

/// A JSONL file (or chunk folder, data/jsonl_source.h) to evaluate.
struct EvalDataset {
  std::string name;        // the task when samples have no "task"; prefix of sample ids
  std::string annotation;  // the file or folder
  std::string root_dir;    // media paths are relative to it (an absolute path stays as it is)
};

struct EvalSample {
  std::string id;         // "uid" or "id" (string or number), else "<dataset>#<row>" (0-based, as the loader's ids)
  std::string task;       // "task", else the dataset's name
  std::string origin;     // "file:line", for messages
  std::string root_dir;   // the dataset's
  data::Sample sample;    // conversations and media fields, as training reads them
  std::string question;   // the human turns before the last assistant turn, joined by "\n", <|bboxK|> substituted
  std::string reference;  // the last assistant turn's text
  AnswerType type = AnswerType::short_answer;

  std::vector<std::string> options;          // mcq: option texts in letter order (1..26)
  char answer_letter = 'A';                  // mcq: the correct letter, uppercase
  std::string qa_uid;                        // mcq: FGQA's question group ("" when absent)
  std::string answer_text;                   // short, caption, judge: "answer" when it is a string, else `reference`
  Segment segment;                           // rtloc: the event, in source frames
  std::vector<DenseCaption> dense_captions;  // rdcap: the events, in source frames
  double total_frames = 0;           // rtloc, rdcap: frames of the source video ("total_frames", else num_frames)
  int num_frames = 32;               // rtloc, rdcap: the sampled frames answers count in ("num_frames", else 32)
  std::string metadata_json = "{}";  // judge: {"video"/"image": ..., "metadata": ...} passed to the judge record
};

/// Parses row `row` of `dataset` (`origin` = "file:line"). The answer type is "answer_type" when present
/// ("mcq", "short", "rtloc", "caption", "rdcap", "judge"; "sgqa"/"rcap" mean judge), else inferred: dense_captions
/// -> rdcap; task sgqa/rcap -> judge; options -> mcq; start_frame/end_frame or num_frames -> rtloc; otherwise short.
/// Answers come from the typed fields (mcq "answer" letter or "answer_index"; rtloc "answer" [s, e] or
/// start_frame/end_frame; rdcap dense_captions [{start_frame, end_frame, caption}]) and else are read from the
/// reference turn. Throws data::SampleError whose message starts with `origin` for an unusable line.
EvalSample parse_eval_sample(const std::string& line, const EvalDataset& dataset, int64_t row,
                             const std::string& origin);

/// The first `max_samples` rows of the dataset (all when max_samples <= 0). Throws config::ConfigError naming a
/// missing annotation, data::SampleError naming file:line for a bad row.
std::vector<EvalSample> read_eval_samples(const EvalDataset& dataset, int64_t max_samples = 0);

}  // namespace plm::eval
