// The raw configuration before it is typed: recipe YAML with its `include:`s merged, then
// `a.b.c=value` overrides on top, and for every key the place it was last set (for error messages).
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "plm/common/user_error.h"

namespace plm::config {

/// Merged YAML mapping plus where each dotted key path was set ("file.yaml:12" or
/// "command-line override 'optim.lr=1e-5'").
struct Source {
  YAML::Node root = YAML::Node(YAML::NodeType::Map);
  std::map<std::string, std::string> origin;

  /// Where `path` (dotted) was set; falls back to its closest set ancestor, then to "built-in default".
  std::string where(const std::string& path) const;
};

/// Thrown for any error a user can cause; what() is one or more lines, each one complete sentence.
struct ConfigError : UserError {
  explicit ConfigError(const std::string& what) : UserError(what) {}
};

/// Reads `path` and resolves its `include:` key (a file name or a list of them) recursively. Included
/// files are merged first, in order, and the including file's own keys go on top. An include is
/// looked up relative to the including file's folder, then each folder above it, so a recipe anywhere
/// in the repository can write `include: configs/models/plm_1b.yaml`. Maps merge key by key; any
/// other value replaces. Throws ConfigError naming the file (and line) for unreadable files, YAML
/// syntax errors, a non-mapping document, missing includes and include cycles.
/// Bounded cost, whatever the files hold: each must be a regular file (not a folder, FIFO or device) of at most
/// 16 MiB; includes nest at most 32 deep and at most 256 files are read in all; a document (or an override's
/// value) may hold at most 100,000 values with its YAML aliases expanded (the walk that counts stops there, so an
/// alias bomb is refused in linear time), and a recipe with all its includes at most 100,000 as parsed, counted from
/// the parser's events before any node is built; brackets ('[', '{') nest at most 200 deep, counted in the text
/// before it is parsed (not in quotes or comments); other YAML nesting is bounded by yaml-cpp's depth guard.
/// Memory: at most 8 bytes per byte read plus 128 MiB (yaml-cpp's nodes cost ~900 bytes each while they are built;
/// measured: 89 MB for an accepted flow list of 99,000 zeros, 95 MB for a 16 MB scalar, 4 MB for 2 MB of zeros
/// refused at the 100,001st value; tests/tooling/parser_memory.py checks it).
Source load_yaml_with_includes(const std::string& path);

/// One YAML (or JSON) file with the bounds above and no includes: what every other reader of a user's YAML uses (the
/// dataset registry, a checkpoint's params.json). Throws ConfigError naming the file (and line).
YAML::Node load_yaml_file(const std::string& path);

/// Applies `key.path=value` overrides in order. The value is parsed as a YAML scalar or flow
/// collection (`1e-5`, `true`, `null`, `[a, b]`); an empty value is the empty string.
/// Throws ConfigError for an argument without `=` or with an empty key.
void apply_overrides(Source& source, const std::vector<std::string>& overrides);

}  // namespace plm::config
