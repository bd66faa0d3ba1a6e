#include "plm/config/emit.h"

#include <charconv>
#include <cmath>
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
    out_ << YAML::BeginMap;
    const_cast<T&>(section).visit(*this);  // visit() only reads through a const Writer
    out_ << YAML::EndMap;
  }

  YAML::Emitter& out_;
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

}  // namespace plm::config
