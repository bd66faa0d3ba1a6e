// Benchmark results: one TaskResult per task, reported as JSON and as a fixed-width table (docs/reference.md 9).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace plm::eval {

/// The scores of one task. Metric values are fractions in [0, 1] (lmms-eval's units); the first metric is the one the
/// PLM paper reports for the task. A metric over zero instances is 0.
struct TaskResult {
  std::string task;                                     // "fgqa", "rtloc", "rdcap", ...
  std::vector<std::pair<std::string, double>> metrics;  // name -> value, in report order
  int64_t num_instances = 0;                            // samples scored
  int64_t parse_failures = 0;                           // samples whose prediction could not be parsed
};

/// {"<task>": {"<metric>": value, ..., "num_instances": n, "parse_failures": k}, ...} in the given order, indented by
/// 2. Throws std::invalid_argument when two results share a task name.
std::string results_json(const std::vector<TaskResult>& results);

/// A fixed-width table, one row per metric, values in percent with 2 decimals:
///   task   metric                score (%)  instances  parse failures
///   fgqa   multibinary_accuracy      50.00          6               1
/// Counts are printed on each task's first row only.
std::string results_table(const std::vector<TaskResult>& results);

/// Mean of `values`; 0 for none (a task with no samples reports 0, not NaN, so the JSON stays valid).
double mean(const std::vector<double>& values);

}  // namespace plm::eval
