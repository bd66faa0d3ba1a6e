#include "plm/data/sample.h"

#include <charconv>
#include <cmath>

#include <nlohmann/json.hpp>

#include "plm/text/tokenizer.h"

namespace plm::data {
namespace {

using nlohmann::json;

// A media path from the row (a JSON string). A NUL inside would silently cut the path where the OS reads it (the
// file opened would be another one): refused.
std::string media_path(const json& v) {
  std::string path = v.get<std::string>();
  if (path.find('\0') != std::string::npos)
    throw SampleError("bad_schema", "a media path contains a NUL character (\\u0000), which no file name can hold.");
  if (path.empty()) throw SampleError("bad_schema", "a media path is empty.");
  return path;
}

// Python's str() of a JSON scalar: 5 -> "5", 1.0 -> "1.0", 1e-05 -> "1e-05", true -> "True", null -> "None".
std::string python_str(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_number_integer()) return v.dump();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    if (std::isnan(d)) return "nan";
    char buf[64];
    // Python's repr: shortest round-trip digits, scientific when exponent < -4 or >= 16.
    const double mag = std::fabs(d);
    const bool sci = mag != 0 && (mag < 1e-4 || mag >= 1e16);
    auto [end, ec] = sci ? std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific)
                         : std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed);
    std::string s(buf, end);  // scientific: "1e-05", as Python writes it
    if (!sci && s.find('.') == std::string::npos) s += ".0";
    return s;
  }
  throw std::invalid_argument("not a scalar");
}

double number(const json& v, const std::string& what) {
  if (!v.is_number()) throw SampleError("bad_schema", "'" + what + "' must be a number.");
  return v.get<double>();
}

std::array<double, 4> box(const json& v, const std::string& what) {
  if (!v.is_array() || v.size() != 4) throw SampleError("bad_schema", "'" + what + "' must be a list of 4 numbers.");
  return {number(v[0], what), number(v[1], what), number(v[2], what), number(v[3], what)};
}

}  // namespace

std::string row_too_long() {
  return "the row is longer than " + std::to_string(kMaxRowBytes) + " bytes (16 MiB), the most a row may be.";
}

Sample parse_sample(const std::string& line) {
  if (line.size() > kMaxRowBytes) throw SampleError("too_long", row_too_long());
  // PLM reads annotations as UTF-8 text: a line that is not valid UTF-8 fails there too.
  if (text::repair_utf8(line) != line) throw SampleError("bad_encoding", "the line is not valid UTF-8.");
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    throw SampleError("bad_json", "the line is not valid JSON (" + std::string(e.what()).substr(0, 120) + ").");
  }
  if (!j.is_object()) throw SampleError("bad_json", "the line is not a JSON object.");
  Sample s;
  if (j.contains("conversations")) {
    const json& c = j["conversations"];
    if (!c.is_array()) throw SampleError("bad_schema", "'conversations' must be a list.");
    for (size_t i = 0; i < c.size(); ++i) {
      const json& t = c[i];
      if (!t.is_object() || !t.contains("from") || !t["from"].is_string() || !t.contains("value"))
        throw SampleError("bad_schema",
                          "conversation turn " + std::to_string(i) + " needs a string 'from' and a 'value'.");
      text::Turn turn{t["from"].get<std::string>(), ""};
      const json& v = t["value"];
      if (v.is_string()) {
        turn.value = v.get<std::string>();
      } else if (turn.from == "assistant" && i > 0 && !v.is_structured()) {
        turn.value = python_str(v);
      } else {
        throw SampleError("bad_schema", "the value of conversation turn " + std::to_string(i) + " must be a string.");
      }
      s.conversations.push_back(std::move(turn));
    }
  } else if (j.contains("text") && j["text"].is_string()) {
    s.conversations = {{"human", ""}, {"assistant", j["text"].get<std::string>()}};
  } else {
    throw SampleError("bad_schema", "the sample has neither 'conversations' nor a string 'text'.");
  }
  if (j.contains("image")) {
    const json& im = j["image"];
    if (im.is_string()) {
      s.images.push_back(media_path(im));
    } else if (im.is_array() && !im.empty()) {
      for (const auto& p : im) {
        if (!p.is_string()) throw SampleError("bad_schema", "'image' entries must be strings.");
        s.images.push_back(media_path(p));
      }
    } else {
      throw SampleError("bad_schema", "'image' must be a path or a non-empty list of paths.");
    }
  } else if (j.contains("video")) {
    if (!j["video"].is_string()) throw SampleError("bad_schema", "'video' must be a path.");
    s.video = media_path(j["video"]);
    if (j.contains("start_time") && !j["start_time"].is_null()) s.start_time = number(j["start_time"], "start_time");
    if (j.contains("end_time") && !j["end_time"].is_null()) s.end_time = number(j["end_time"], "end_time");
    if (j.contains("bbox_map") && !j["bbox_map"].is_null()) {
      if (!j["bbox_map"].is_object()) throw SampleError("bad_schema", "'bbox_map' must be an object.");
      // The reference draws the box of each sampled frame p for which bbox_map[str(p)] is not None
      // (docs/reference.md 4.5 step 6): other entries are never used, so they are left out, not fatal.
      for (const auto& [key, value] : j["bbox_map"].items()) {
        int64_t frame = 0;
        const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), frame);
        if (value.is_null() || ec != std::errc() || end != key.data() + key.size() || std::to_string(frame) != key) {
          ++s.bbox_map_ignored;
          continue;
        }
        s.bbox_map[frame] = box(value, "bbox_map");
      }
    }
  }
  if (j.contains("bbox")) {
    if (!j["bbox"].is_array()) throw SampleError("bad_schema", "'bbox' must be a list of [x, y, w, h].");
    for (const auto& b : j["bbox"]) s.bbox.push_back(box(b, "bbox"));
    if (!j.contains("width") || !j.contains("height"))
      throw SampleError("bad_schema", "the sample has 'bbox' but no 'width' and 'height' to normalise it.");
    s.width = number(j["width"], "width");
    s.height = number(j["height"], "height");
  }
  return s;
}

}  // namespace plm::data
