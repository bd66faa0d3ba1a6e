// The dataset registry (configs/datasets.yaml, PLM's apps/plm/configs/datasets.yaml format) and the datamix.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace plm::data {

/// One dataset: its annotation (a .jsonl file, or a folder of *chunk.N*.jsonl files) and the folder its
/// media paths are relative to ("" for text-only data).
struct DatasetEntry {
  std::string name;
  std::string annotation;
  std::string root_dir;
};

/// A datamix entry with its weight normalised so the mix sums to 1.
struct MixEntry {
  DatasetEntry dataset;
  double weight;
};

/// Reads a registry file: name -> {annotation, root_dir (optional)}. Throws config::ConfigError naming the file and
/// line for a malformed entry.
std::map<std::string, DatasetEntry> load_registry(const std::string& path);

/// Resolves `datamix` ("name1:w1,name2:w2") against the registry. An entry may also be a path to a .jsonl file,
/// used as its own dataset with its folder as root_dir. Throws config::ConfigError for an unknown name (with a
/// "did you mean" suggestion), a malformed entry, or a repeated name.
std::vector<MixEntry> resolve_datamix(const std::string& datamix, const std::map<std::string, DatasetEntry>& registry,
                                      const std::string& registry_path);

}  // namespace plm::data
