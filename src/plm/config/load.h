// Loading a run's configuration: struct defaults <- recipe YAML (with includes) <- overrides.
#pragma once

#include <string>
#include <vector>

#include "plm/config/args.h"
#include "plm/config/source.h"

namespace plm::config {

/// A loaded configuration and what the loader noticed along the way.
struct Loaded {
  TrainArgs args;
  Source source;  // merged YAML and where each key was set
  // Keys accepted for PLM compatibility but not used by this build, set to something other than
  // PLM's default (so the run differs from PLM's): "path (where): why".
  std::vector<std::string> ignored;
};

/// Loads `recipe` (a YAML file; "" = defaults only) and applies `overrides` ("a.b.c=value").
/// Every key is type-checked against TrainArgs. Throws ConfigError whose message has one line per
/// problem, each naming the file and line (or the override) and the key: unknown keys come with a
/// "did you mean" suggestion, wrong types say what was expected. Does not run validate().
Loaded load_config(const std::string& recipe, const std::vector<std::string>& overrides = {});

/// Types an already merged Source (used by load_config and by tests).
Loaded load_source(Source source);

/// Every dotted key path TrainArgs accepts, in declaration order (optional sections expanded).
std::vector<std::string> all_key_paths();

}  // namespace plm::config
