// Semantic checks of a typed configuration: values that parse but cannot run.
#pragma once

#include <string>
#include <vector>

#include "plm/config/load.h"

namespace plm::config {

/// Returns one sentence per problem, each naming where the key was set and what is allowed
/// (empty = valid). Checks ranges, enumerations (scheduler, fsdp_type, conversation_format, ...),
/// model shape consistency (heads divide dim, kv heads divide heads, the vision grid divides by
/// pooling_ratio) and the datamix syntax "name:weight,...". Dataset names are checked against the
/// registry when data is loaded, not here.
std::vector<std::string> validate(const Loaded& loaded);

/// Parses PLM's datamix string "name1:w1,name2:w2" (whitespace ignored, weights normalised to sum 1).
/// Throws ConfigError for a malformed entry, a non-positive weight or a repeated name.
std::vector<std::pair<std::string, double>> parse_datamix(const std::string& datamix);

}  // namespace plm::config
