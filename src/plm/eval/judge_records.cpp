#include "plm/eval/judge_records.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

namespace plm::eval {

std::string judge_record_line(std::string_view task, const JudgeRecord& record) {
  nlohmann::ordered_json metadata =
      nlohmann::ordered_json::parse(record.metadata_json, nullptr, /*allow_exceptions=*/false);
  if (!metadata.is_object()) {
    throw std::invalid_argument("judge record '" + record.uid +
                                "': metadata_json is not a JSON object: " + record.metadata_json);
  }
  nlohmann::ordered_json line;
  line["task"] = task;
  line["uid"] = record.uid;
  line["question"] = record.question;
  line["prediction"] = record.prediction;
  line["ground_truth"] = record.ground_truth;
  line["metadata"] = std::move(metadata);
  // A generation cut mid-token can end in a partial UTF-8 sequence: replace it rather than lose the record.
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void write_judge_records(std::ostream& out, std::string_view task, const std::vector<JudgeRecord>& records) {
  for (const JudgeRecord& record : records) out << judge_record_line(task, record) << '\n';
}

}  // namespace plm::eval
