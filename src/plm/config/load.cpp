#include "plm/config/load.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "plm/config/suggest.h"

namespace plm::config {
namespace {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "null";
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  return "'" + n.Scalar() + "'";
}

// Collects every key path, expanding optional sections with their defaults.
struct PathLister {
  std::string prefix;
  std::vector<std::string>* out;

  template <class T>
  void operator()(const char* key, T& field, const char* = nullptr) {
    const std::string path = join(prefix, key);
    out->push_back(path);
    if constexpr (is_optional<T>::value) {
      using U = typename T::value_type;
      if constexpr (std::is_class_v<U> && !std::is_same_v<U, std::string>) {
        U inner;
        PathLister sub{path, out};
        inner.visit(sub);
      }
    } else if constexpr (std::is_class_v<T> && !std::is_same_v<T, std::string> && !std::is_same_v<T, Opaque>) {
      PathLister sub{path, out};
      field.visit(sub);
    }
  }
};

template <class T, class = void>
struct has_equal : std::false_type {};
template <class T>
struct has_equal<T, std::void_t<decltype(std::declval<const T&>() == std::declval<const T&>())>> : std::true_type {};

// Equality of two values of a field (sections, which are never ignored, compare equal).
template <class T>
bool same(const T& a, const T& b) {
  if constexpr (std::is_same_v<T, Opaque>)
    return !a.node == !b.node && (!a.node || YAML::Dump(a.node) == YAML::Dump(b.node));
  else if constexpr (has_equal<T>::value)
    return a == b;
  else
    return true;
}

// Reads one YAML mapping into a struct, field by field, collecting errors instead of stopping.
class Reader {
 public:
  Reader(Loaded& loaded, YAML::Node node, std::string prefix, std::vector<std::string>& errors)
      : loaded_(loaded), node_(std::move(node)), prefix_(std::move(prefix)), errors_(errors) {}

  template <class T>
  void operator()(const char* key, T& field, const char* ignored_reason = nullptr) {
    seen_.push_back(key);
    const YAML::Node& cnode = node_;
    const YAML::Node value = cnode[key];
    if (!value) return;  // not set: keep the default
    const std::string path = join(prefix_, key);
    if (!ignored_reason) return read(path, value, field);
    // An unused key matters only when it asks for something other than PLM's default.
    const T before = field;
    read(path, value, field);
    if (!same(before, field))
      loaded_.ignored.push_back(path + " (" + loaded_.source.where(path) + "): " + ignored_reason);
  }

  // Reports the keys of this mapping that no field claimed.
  void finish() {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      if (std::find(seen_.begin(), seen_.end(), key) != seen_.end()) continue;
      const std::string path = join(prefix_, key);
      std::string msg = loaded_.source.where(path) + ": unknown key '" + key + "'" +
                        (prefix_.empty() ? " at the top level" : " under '" + prefix_ + "'");
      std::string hint = closest(key, seen_);
      if (!hint.empty()) {
        hint = join(prefix_, hint);
      } else {  // maybe it belongs to another section: match on the last component
        std::vector<std::string> leaves;
        const auto paths = all_key_paths();
        for (const auto& p : paths) leaves.push_back(p.substr(p.rfind('.') + 1));
        const std::string leaf = closest(key, leaves);
        if (!leaf.empty())
          for (const auto& p : paths)
            if (p.substr(p.rfind('.') + 1) == leaf) {
              hint = p;
              break;
            }
      }
      errors_.push_back(msg + (hint.empty() ? "." : "; did you mean '" + hint + "'?"));
    }
  }

 private:
  void type_error(const std::string& path, const YAML::Node& value, const char* expected) {
    errors_.push_back(loaded_.source.where(path) + ": key '" + path + "' expects " + expected + ", got " +
                      describe(value) + ".");
  }

  void read(const std::string& path, const YAML::Node& value, bool& out) {
    if (!value.IsScalar() || !YAML::convert<bool>::decode(value, out)) type_error(path, value, "true or false");
  }
  void read(const std::string& path, const YAML::Node& value, int64_t& out) {
    const std::string s = value.IsScalar() ? value.Scalar() : "";
    const char* begin = s.c_str() + (s.size() > 1 && s[0] == '+' ? 1 : 0);
    int64_t v = 0;
    auto [end, ec] = std::from_chars(begin, s.c_str() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.c_str() + s.size()) return type_error(path, value, "an integer");
    out = v;
  }
  void read(const std::string& path, const YAML::Node& value, double& out) {
    const std::string s = value.IsScalar() ? value.Scalar() : "";
    if (s == ".inf" || s == "+.inf" || s == ".Inf") return void(out = HUGE_VAL);
    if (s == "-.inf" || s == "-.Inf") return void(out = -HUGE_VAL);
    if (s == ".nan" || s == ".NaN") return void(out = std::nan(""));
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) return type_error(path, value, "a number");
    out = v;
  }
  void read(const std::string& path, const YAML::Node& value, std::string& out) {
    if (!value.IsScalar()) return type_error(path, value, "a string");
    out = value.Scalar();
  }
  void read(const std::string&, const YAML::Node& value, Opaque& out) { out.node = YAML::Clone(value); }

  template <class T>
  void read(const std::string& path, const YAML::Node& value, std::optional<T>& out) {
    if (value.IsNull()) {
      out.reset();
      return;
    }
    T inner = out.value_or(T{});
    read(path, value, inner);
    out = std::move(inner);
  }

  // A closed choice (config/args.h), or a nested section.
  template <class T>
  void read(const std::string& path, const YAML::Node& value, T& out) {
    if constexpr (std::is_enum_v<T>) {
      const std::vector<const char*>& names = names_of(T{});
      std::string list;
      for (size_t i = 0; i < names.size(); ++i) {
        if (value.IsScalar() && value.Scalar() == names[i]) return void(out = static_cast<T>(i));
        list += std::string(i ? ", " : "") + names[i];
      }
      type_error(path, value, ("one of " + list).c_str());
    } else {
      if (!value.IsMap()) return type_error(path, value, "a mapping");
      Reader sub(loaded_, value, path, errors_);
      out.visit(sub);
      sub.finish();
    }
  }

  Loaded& loaded_;
  YAML::Node node_;
  std::string prefix_;
  std::vector<std::string>& errors_;
  std::vector<std::string> seen_;
};

}  // namespace

std::vector<std::string> all_key_paths() {
  static const std::vector<std::string> paths = [] {
    std::vector<std::string> out;
    TrainArgs args;
    PathLister lister{"", &out};
    args.visit(lister);
    return out;
  }();
  return paths;
}

Loaded load_source(Source source) {
  Loaded loaded;
  loaded.source = std::move(source);
  std::vector<std::string> errors;
  Reader root(loaded, loaded.source.root, "", errors);
  loaded.args.visit(root);
  root.finish();
  if (!errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
    throw ConfigError(all);
  }
  return loaded;
}

Loaded load_config(const std::string& recipe, const std::vector<std::string>& overrides) {
  Source source = recipe.empty() ? Source{} : load_yaml_with_includes(recipe);
  apply_overrides(source, overrides);
  return load_source(std::move(source));
}

}  // namespace plm::config
