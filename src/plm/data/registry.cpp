#include "plm/data/registry.h"

#include <filesystem>

#include <yaml-cpp/yaml.h>

#include "plm/config/source.h"
#include "plm/config/suggest.h"
#include "plm/config/validate.h"

namespace fs = std::filesystem;

namespace plm::data {

std::map<std::string, DatasetEntry> load_registry(const std::string& path) {
  if (!fs::exists(path)) throw config::ConfigError("cannot read the dataset registry '" + path + "' (data.registry).");
  const YAML::Node root = config::load_yaml_file(path);  // bounded: regular file, size, values, nesting
  std::map<std::string, DatasetEntry> out;
  if (root.IsNull()) return out;
  if (!root.IsMap())
    throw config::ConfigError(path + ": the registry must map dataset names to {annotation, root_dir}.");
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string name = it->first.as<std::string>();
    const std::string where = path + ":" + std::to_string(it->first.Mark().line + 1);
    const YAML::Node e = it->second;  // a copy: it->second is a proxy temporary
    if (!e.IsMap() || !e["annotation"] || !e["annotation"].IsScalar())
      throw config::ConfigError(where + ": dataset '" + name + "' needs an 'annotation' path.");
    for (auto k = e.begin(); k != e.end(); ++k) {
      const std::string key = k->first.as<std::string>();
      if (key != "annotation" && key != "root_dir")
        throw config::ConfigError(where + ": dataset '" + name + "' has unknown key '" + key +
                                  "'; the keys are annotation and root_dir.");
    }
    DatasetEntry d{name, e["annotation"].as<std::string>(), ""};
    if (e["root_dir"] && !e["root_dir"].IsNull()) d.root_dir = e["root_dir"].as<std::string>();
    out[name] = d;
  }
  return out;
}

std::vector<MixEntry> resolve_datamix(const std::string& datamix, const std::map<std::string, DatasetEntry>& registry,
                                      const std::string& registry_path) {
  std::vector<std::pair<std::string, double>> mix;
  try {
    mix = config::parse_datamix(datamix);
  } catch (const config::ConfigError& e) {
    throw config::ConfigError("data.datamix " + std::string(e.what()) + ".");
  }
  std::vector<std::string> names;
  for (const auto& [n, d] : registry) names.push_back(n);
  std::vector<MixEntry> out;
  for (const auto& [name, weight] : mix) {
    if (const auto it = registry.find(name); it != registry.end()) {
      out.push_back({it->second, weight});
    } else if (fs::path(name).extension() == ".jsonl") {
      if (!fs::exists(name))
        throw config::ConfigError("data.datamix names the file '" + name + "', which does not exist.");
      out.push_back({{name, name, fs::path(name).parent_path().string()}, weight});
    } else {
      const std::string hint = config::closest(name, names);
      throw config::ConfigError("data.datamix names dataset '" + name + "', which is not in the registry '" +
                                registry_path + "'" + (hint.empty() ? "" : "; did you mean '" + hint + "'") +
                                "? Register it there, or give the path of a .jsonl file.");
    }
  }
  return out;
}

}  // namespace plm::data
