#include "plm/eval/results.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>

namespace plm::eval {

double mean(const std::vector<double>& values) {
  if (values.empty()) return 0.0;
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

std::string results_json(const std::vector<TaskResult>& results) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const TaskResult& result : results) {
    if (out.contains(result.task)) throw std::invalid_argument("results_json: task '" + result.task + "' twice.");
    nlohmann::ordered_json task = nlohmann::ordered_json::object();
    for (const auto& [name, value] : result.metrics) task[name] = value;
    task["num_instances"] = result.num_instances;
    task["parse_failures"] = result.parse_failures;
    out[result.task] = std::move(task);
  }
  return out.dump(2);
}

std::string results_table(const std::vector<TaskResult>& results) {
  size_t task_width = 4, metric_width = 6;  // "task", "metric"
  for (const TaskResult& result : results) {
    task_width = std::max(task_width, result.task.size());
    for (const auto& metric : result.metrics) metric_width = std::max(metric_width, metric.first.size());
  }
  const int tw = static_cast<int>(task_width), mw = static_cast<int>(metric_width);
  std::string table;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %-*s  %9s  %9s  %14s\n", tw, "task", mw, "metric", "score (%)", "instances",
                "parse failures");
  table += line;
  for (const TaskResult& result : results) {
    for (size_t i = 0; i < result.metrics.size(); ++i) {
      const auto& [name, value] = result.metrics[i];
      if (i == 0) {
        std::snprintf(line, sizeof line, "%-*s  %-*s  %9.2f  %9lld  %14lld\n", tw, result.task.c_str(), mw,
                      name.c_str(), 100.0 * value, static_cast<long long>(result.num_instances),
                      static_cast<long long>(result.parse_failures));
      } else {
        std::snprintf(line, sizeof line, "%-*s  %-*s  %9.2f\n", tw, "", mw, name.c_str(), 100.0 * value);
      }
      table += line;
    }
  }
  return table;
}

}  // namespace plm::eval
