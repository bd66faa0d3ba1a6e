#include "plm/config/emit.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <type_traits>

namespace plm::config {
namespace {

class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void operator()(const char* key, const T& field, const char* = nullptr) {
    out_ << YAML::Key << key << YAML::Value;
    write(field);
  }

 private:
  void write(bool v) { out_ << (v ? "true" : "false"); }
  void write(int64_t v) { out_ << v; }
  void write(double v) { out_ << format_double(v); }
  void write(const std::string& v) { out_ << YAML::DoubleQuoted << v; }
  void write(const Opaque& v) {
    if (v.node && !v.node.IsNull())
      out_ << v.node;
    else
      out_ << YAML::Null;
  }
  template <class T>
  void write(const std::optional<T>& v) {
    if (v)
      write(*v);
    else
      out_ << YAML::Null;
  }
  template <class T>
  void write(const T& section) {
    if constexpr (std::is_enum_v<T>) {
      write(std::string(name_of(section)));  // a closed choice
    } else {
      out_ << YAML::BeginMap;
      const_cast<T&>(section).visit(*this);  // visit() only reads through a const Writer
      out_ << YAML::EndMap;
    }
  }

  YAML::Emitter& out_;
};

/// The same walk as Writer, as indented JSON (PLM's params.json). Non-finite floats become null; an Opaque
/// YAML value is written as JSON with its scalars kept as strings unless they read as numbers or booleans.
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  template <class T>
  void operator()(const char* key, const T& field, const char* = nullptr) {
    out_ += first_ ? "\n" : ",\n";
    first_ = false;
    indent();
    quoted(key);
    out_ += ": ";
    write(field);
  }

  template <class T>
  void section(const T& s) {
    out_ += "{";
    ++depth_;
    first_ = true;
    const_cast<T&>(s).visit(*this);
    --depth_;
    if (!first_) {
      out_ += "\n";
      indent();
    }
    out_ += "}";
    first_ = false;
  }

 private:
  void indent() { out_.append(2 * depth_, ' '); }
  void quoted(const std::string& v) {
    out_ += '"';
    for (const char c : v) {
      switch (c) {
        case '"':
          out_ += "\\\"";
          break;
        case '\\':
          out_ += "\\\\";
          break;
        case '\n':
          out_ += "\\n";
          break;
        case '\t':
          out_ += "\\t";
          break;
        case '\r':
          out_ += "\\r";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out_ += buf;
          } else {
            out_ += c;
          }
      }
    }
    out_ += '"';
  }
  void write(bool v) { out_ += v ? "true" : "false"; }
  void write(int64_t v) { out_ += std::to_string(v); }
  void write(double v) { out_ += std::isfinite(v) ? format_double(v) : "null"; }
  void write(const std::string& v) { quoted(v); }
  void write(const Opaque& v) { node(v.node); }
  void node(const YAML::Node& n) {
    if (!n || n.IsNull()) {
      out_ += "null";
    } else if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      double d;
      if (n.Tag() != "!" && (s == "true" || s == "false"))
        out_ += s;
      else if (n.Tag() != "!" && YAML::convert<double>::decode(n, d) && std::isfinite(d))
        out_ += s;
      else
        quoted(s);
    } else if (n.IsSequence()) {
      out_ += "[";
      for (size_t i = 0; i < n.size(); ++i) {
        if (i) out_ += ", ";
        node(n[i]);
      }
      out_ += "]";
    } else {
      out_ += "{";
      bool first = true;
      for (const auto& kv : n) {
        if (!first) out_ += ", ";
        first = false;
        quoted(kv.first.Scalar());
        out_ += ": ";
        node(kv.second);
      }
      out_ += "}";
    }
  }
  template <class T>
  void write(const std::optional<T>& v) {
    if (v)
      write(*v);
    else
      out_ += "null";
  }
  template <class T>
  void write(const T& s) {
    if constexpr (std::is_enum_v<T>) {
      quoted(name_of(s));  // a closed choice
    } else {
      const bool first = first_;
      section(s);
      first_ = first;
    }
  }

  std::string& out_;
  int depth_ = 0;
  bool first_ = true;
};

}  // namespace

std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[64];
  // Fixed notation where it stays readable (500000.0, 0.0001), else the shortest form (1e-05).
  const double mag = std::fabs(v);
  const bool fixed = mag == 0 || (mag >= 1e-4 && mag < 1e15);
  auto [end, ec] = fixed ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed)
                         : std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string to_yaml(const TrainArgs& args) {
  YAML::Emitter out;
  out.SetIndent(2);
  Writer w(out);
  out << YAML::BeginMap;
  const_cast<TrainArgs&>(args).visit(w);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string to_json(const TrainArgs& args) {
  std::string out;
  JsonWriter w(out);
  w.section(args);
  return out + "\n";
}

}  // namespace plm::config
