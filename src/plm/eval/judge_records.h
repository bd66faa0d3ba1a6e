// Predictions for an external LLM judge: PLM-VideoBench SGQA and RCap are scored by Llama-3.3-70B-Instruct
// (docs/reference.md 9), which this library does not run. It writes one JSON object per line instead.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace plm::eval {

/// One prediction to be judged.
struct JudgeRecord {
  std::string uid;
  std::string question;              // SGQA's question, or RCap's prompt
  std::string prediction;            // the model's answer
  std::string ground_truth;          // SGQA's answer, or RCap's caption
  std::string metadata_json = "{}";  // a JSON object passed through unchanged (video, frames, masklet, ...)
};

/// One JSONL line, without the newline, keys in this order:
///   {"task":..., "uid":..., "question":..., "prediction":..., "ground_truth":..., "metadata":{...}}
/// Invalid UTF-8 in the strings (a cut multi-byte token) is replaced by U+FFFD rather than failing. Throws
/// std::invalid_argument naming the uid when metadata_json is not a JSON object.
std::string judge_record_line(std::string_view task, const JudgeRecord& record);

/// Writes judge_record_line(task, r) + '\n' for each record.
void write_judge_records(std::ostream& out, std::string_view task, const std::vector<JudgeRecord>& records);

}  // namespace plm::eval
