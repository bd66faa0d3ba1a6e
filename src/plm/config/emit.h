// Writing a resolved configuration back out.
#pragma once

#include <string>

#include "plm/config/args.h"

namespace plm::config {

/// The whole configuration as YAML, every key present (defaults included), in declaration order.
/// Strings are double-quoted and floats are written in their shortest round-trip form, so
/// load_config of this text gives back the same TrainArgs (and to_yaml of that, the same text).
std::string to_yaml(const TrainArgs& args);

/// The whole configuration as indented JSON (PLM's params.json: every TrainArgs key). Floats as in to_yaml,
/// non-finite ones as null. JSON is YAML, so load_config reads it back to the same TrainArgs.
std::string to_json(const TrainArgs& args);

/// Shortest text that parses back to exactly `v`, with ".0" added to integral values ("500000.0").
std::string format_double(double v);

}  // namespace plm::config
