#include "plm/config/source.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace plm::config {
namespace {

// Bounds on what a recipe may cost (source.h): a recipe and its includes are a few kB and a few hundred values.
constexpr uintmax_t kMaxFileBytes = 16u << 20;  // one config file
constexpr size_t kMaxIncludeDepth = 32;         // files including files
constexpr size_t kMaxFileLoads = 256;           // files read for one recipe (a diamond of includes reads some twice)
constexpr size_t kMaxValues = 100000;           // nodes of one document with its aliases expanded

// Counts the first document's nodes as the parser reports them, before any is built, into a count shared by a
// recipe and all its includes, and refuses past kMaxValues: yaml-cpp's nodes cost ~530 bytes each (a 2 MB flow
// list of 1,000,000 zeros took 534 MB), so a 16 MiB file could otherwise take 4 GB before check_size() sees it.
// Measured with tests/tooling/parser_memory.
class NodeCounter final : public YAML::EventHandler {
 public:
  NodeCounter(const std::string& what, size_t& n) : what_(what), n_(n) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { count(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { count(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t, const std::string&) override { count(m); }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    count(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    count(m);
  }
  void OnMapEnd() override {}

 private:
  void count(const YAML::Mark& m) {
    if (++n_ > kMaxValues)
      throw ConfigError(what_ + " line " + std::to_string(m.line + 1) + ": more than " + std::to_string(kMaxValues) +
                        " values; a recipe with its includes needs a few hundred.");
  }
  const std::string& what_;
  size_t& n_;
};

// Refuses flow collections ('[' and '{') nested more than kMaxFlowDepth deep, found by a scan of the text before
// yaml-cpp sees it: its scanner holds every token of an unfinished flow collection that could start a key, ~140
// bytes per byte of "[[[[..." (800,000 of them took 217 MB) before its depth guard, which ends the parse somewhere
// between 252 and 499 brackets, is reached. Brackets in quoted scalars and comments are not counted; in a plain
// scalar they are (`a[b` counts one level), which only makes the limit stricter for a text no recipe holds.
constexpr int64_t kMaxFlowDepth = 200;
void check_flow_depth(const std::string& text, const std::string& what) {
  int64_t depth = 0, line = 1;
  char quote = 0;  // the open quote, if any
  bool comment = false, token_start = true;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') ++line;
    if (comment) {
      comment = c != '\n';
    } else if (quote == '\'') {
      if (c == '\'') quote = (i + 1 < text.size() && text[i + 1] == '\'') ? (++i, '\'') : 0;  // '' is a quote
    } else if (quote == '"') {
      if (c == '\\')
        ++i;
      else if (c == '"')
        quote = 0;
    } else if (c == '#' && token_start) {
      comment = true;
    } else if ((c == '\'' || c == '"') && token_start) {
      quote = c;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxFlowDepth)
        throw ConfigError(what + " line " + std::to_string(line) + ": lists or mappings in brackets nest more than " +
                          std::to_string(kMaxFlowDepth) + " deep; a recipe nests a few.");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    token_start = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '[' || c == '{' || c == ',' || c == ':' ||
                  c == '-' || c == '?';
  }
}

// YAML::Load(text) for a document that brings the nodes counted in `values` to at most kMaxValues (aliases not
// expanded: check_size() does that).
YAML::Node load_counted(const std::string& text, const std::string& what, size_t& values) {
  check_flow_depth(text, what);
  {
    std::istringstream in(text);
    YAML::Parser parser(in);
    NodeCounter counter(what, values);
    parser.HandleNextDocument(counter);
  }
  return YAML::Load(text);
}

// Refuses a document that costs too much, or whose mappings have keys that are not names (YAML allows a mapping
// or a list as a key: `{a: 1}: 2`; every reader after this takes keys as strings). One walk counts the nodes as a
// reader sees them (an alias is walked again each time it is used) and stops at kMaxValues: an alias bomb costs
// at most that many steps.
void check_size(const YAML::Node& doc, const std::string& what) {
  size_t n = 0;
  std::vector<YAML::Node> stack{doc};
  while (!stack.empty()) {
    if (++n > kMaxValues)
      throw ConfigError(what + " holds more than " + std::to_string(kMaxValues) +
                        " values once its YAML aliases are expanded; a recipe needs a few hundred (an alias bomb?).");
    const YAML::Node node = stack.back();
    stack.pop_back();
    if (node.IsMap()) {
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!it->first.IsScalar())
          throw ConfigError(what + " line " + std::to_string(it->first.Mark().line + 1) +
                            ": a key must be a name, not " + (it->first.IsMap() ? "a mapping" : "a list or null") +
                            ".");
        ++n;  // the key
        stack.push_back(it->second);
      }
    } else if (node.IsSequence()) {
      for (auto it = node.begin(); it != node.end(); ++it) stack.push_back(*it);
    }
  }
}

// The text of a config file: a regular file (not a folder, FIFO or device) of at most kMaxFileBytes.
std::string read_config_file(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw ConfigError("cannot read config file '" + path.string() +
                      "': " + (ec ? ec.message() : std::string("No such file or directory")) + ".");
  if (!fs::is_regular_file(st))
    throw ConfigError("config file '" + path.string() + "' is " +
                      (fs::is_directory(st) ? "a folder" : "not a regular file (a FIFO, device or socket)") +
                      "; a recipe or include must be a YAML file.");
  const uintmax_t bytes = fs::file_size(path, ec);
  if (!ec && bytes > kMaxFileBytes)
    throw ConfigError("config file '" + path.string() + "' is " + std::to_string(bytes) + " bytes; a config file may " +
                      "be at most " + std::to_string(kMaxFileBytes) + ".");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read config file '" + path.string() + "': " + std::strerror(errno) + ".");
  std::string text(ec ? kMaxFileBytes + 1 : bytes + 1, '\0');  // one byte more: a file that grew is noticed
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > (ec ? kMaxFileBytes : bytes))
    throw ConfigError("config file '" + path.string() + "' grew while it was being read; write it elsewhere and " +
                      "rename it into place.");
  return text;
}

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Forget the origins recorded under `path` (its value was replaced wholesale).
void erase_origins_under(std::map<std::string, std::string>& origin, const std::string& path) {
  const std::string dotted = path + ".";
  for (auto it = origin.lower_bound(dotted); it != origin.end() && it->first.rfind(dotted, 0) == 0;)
    it = origin.erase(it);
}

void merge_into(YAML::Node base, const YAML::Node& top, const std::string& prefix, const std::string& file,
                std::map<std::string, std::string>& origin) {
  for (auto it = top.begin(); it != top.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string path = join(prefix, key);
    const YAML::Node value = it->second;  // a copy: it->second is a proxy temporary
    const YAML::Node existing = static_cast<const YAML::Node&>(base)[key];
    const std::string where = file + ":" + std::to_string(it->first.Mark().line + 1);
    if (existing && existing.IsMap() && value.IsMap()) {
      merge_into(existing, value, path, file, origin);
    } else {
      base[key] = YAML::Clone(value);
      erase_origins_under(origin, path);
      // Record the whole subtree so errors deep inside a replaced map still point at a line.
      std::vector<std::pair<std::string, YAML::Node>> stack{{path, value}};
      origin[path] = where;
      while (!stack.empty()) {
        auto [p, n] = stack.back();
        stack.pop_back();
        if (!n.IsMap()) continue;
        for (auto c = n.begin(); c != n.end(); ++c) {
          const std::string cp = join(p, c->first.as<std::string>());
          origin[cp] = file + ":" + std::to_string(c->first.Mark().line + 1);
          stack.push_back({cp, c->second});
        }
      }
    }
  }
}

// One bounded YAML file (source.h), its parsed nodes added to `values`.
YAML::Node load_document(const fs::path& path, size_t& values) {
  const std::string text = read_config_file(path);
  YAML::Node doc;
  try {
    doc = load_counted(text, "config file '" + path.string() + "'", values);
  } catch (const YAML::DeepRecursion& e) {
    throw ConfigError(path.string() + ":" + std::to_string(e.mark.line + 1) + ": the YAML nests deeper than " +
                      std::to_string(e.depth()) + " levels; a recipe nests a few.");
  } catch (const YAML::Exception& e) {
    throw ConfigError(path.string() + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg + ".");
  }
  check_size(doc, "config file '" + path.string() + "'");
  return doc;
}

// Finds an included file: relative to the including file's folder, then each folder above it.
fs::path resolve_include(const fs::path& including, const std::string& name) {
  fs::path wanted(name);
  if (wanted.is_absolute()) return fs::exists(wanted) ? wanted : fs::path();
  for (fs::path dir = fs::absolute(including).parent_path();; dir = dir.parent_path()) {
    if (fs::exists(dir / wanted)) return dir / wanted;
    if (dir == dir.parent_path()) break;
  }
  return {};
}

// `loads` and `values` count the files read and the nodes parsed for the whole recipe.
void load_into(const fs::path& path, Source& out, std::vector<fs::path>& chain, size_t& loads, size_t& values) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(path, ec);
  for (const auto& p : chain) {
    if (p == canonical) {
      std::string cycle;
      for (const auto& q : chain) cycle += q.string() + " -> ";
      throw ConfigError("include cycle: " + cycle + canonical.string() + ".");
    }
  }
  if (chain.size() >= kMaxIncludeDepth)
    throw ConfigError("'" + path.string() + "' is included " + std::to_string(chain.size()) +
                      " files deep; includes may nest at most " + std::to_string(kMaxIncludeDepth) + " deep.");
  if (++loads > kMaxFileLoads)
    throw ConfigError("the recipe reads more than " + std::to_string(kMaxFileLoads) + " config files through its " +
                      "includes (the last: '" + path.string() + "'); files that include the same files many times " +
                      "multiply (a diamond of includes?).");
  YAML::Node doc = load_document(path, values);
  if (doc.IsNull()) return;  // an empty file is an empty mapping
  if (!doc.IsMap())
    throw ConfigError(path.string() + ": the top level of a config file must be a mapping of keys to values.");

  chain.push_back(canonical);
  const YAML::Node& cdoc = doc;
  if (const YAML::Node inc = cdoc["include"]) {
    const std::string where = path.string() + ":" + std::to_string(inc.Mark().line + 1);
    std::vector<std::string> names;
    if (inc.IsScalar()) {
      names.push_back(inc.as<std::string>());
    } else if (inc.IsSequence()) {
      for (const auto& n : inc) {
        if (!n.IsScalar()) throw ConfigError(where + ": 'include' entries must be file names.");
        names.push_back(n.as<std::string>());
      }
    } else {
      throw ConfigError(where + ": 'include' must be a file name or a list of file names.");
    }
    for (const auto& name : names) {
      const fs::path found = resolve_include(path, name);
      if (found.empty())
        throw ConfigError(where + ": included file '" + name + "' not found next to '" + path.string() +
                          "' or in any folder above it.");
      load_into(found, out, chain, loads, values);
    }
    doc.remove("include");
  }
  chain.pop_back();
  merge_into(out.root, doc, "", path.string(), out.origin);
}

}  // namespace

std::string Source::where(const std::string& path) const {
  for (std::string p = path;;) {
    if (auto it = origin.find(p); it != origin.end()) return it->second;
    const auto dot = p.rfind('.');
    if (dot == std::string::npos) return "built-in default";
    p.resize(dot);
  }
}

Source load_yaml_with_includes(const std::string& path) {
  Source out;
  std::vector<fs::path> chain;
  size_t loads = 0, values = 0;
  load_into(path, out, chain, loads, values);
  return out;
}

YAML::Node load_yaml_file(const std::string& path) {
  size_t values = 0;
  return load_document(path, values);
}

void apply_overrides(Source& source, const std::vector<std::string>& overrides) {
  for (const auto& arg : overrides) {
    const auto eq = arg.find('=');
    const std::string where = "command-line override '" + arg + "'";
    if (eq == std::string::npos || eq == 0) throw ConfigError(where + " is not of the form key.path=value.");
    const std::string key = arg.substr(0, eq), text = arg.substr(eq + 1);
    YAML::Node value;
    try {
      size_t values = 0;
      value = text.empty() ? YAML::Node(std::string()) : load_counted(text, where, values);
    } catch (const YAML::Exception& e) {
      throw ConfigError(where + ": the value is not valid YAML (" + e.msg + ").");
    }
    check_size(value, where);
    // Walk/create the maps down to the parent of the last key, then merge a one-key mapping there
    // so that origins are recorded exactly as for a file.
    YAML::Node top(YAML::NodeType::Map);
    YAML::Node cursor = top;
    std::stringstream parts(key);
    std::string part;
    std::vector<std::string> keys;
    while (std::getline(parts, part, '.')) {
      if (part.empty()) throw ConfigError(where + ": the key has an empty component.");
      keys.push_back(part);
    }
    for (size_t i = 0; i + 1 < keys.size(); ++i) {
      cursor[keys[i]] = YAML::Node(YAML::NodeType::Map);
      cursor.reset(cursor[keys[i]]);  // rebind the handle; operator= would overwrite the node
    }
    cursor[keys.back()] = value;
    std::map<std::string, std::string> fresh;
    merge_into(source.root, top, "", "", fresh);
    for (auto& [p, w] : fresh) {
      (void)w;
      source.origin[p] = where;
    }
  }
}

}  // namespace plm::config
