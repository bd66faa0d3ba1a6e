#include "plm/eval/segments.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace plm::eval {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

// Reads an unsigned number at text[pos]: digits, and when `allow_fraction` an optional '.' with digits.
std::optional<double> read_number(std::string_view text, size_t& pos, bool allow_fraction) {
  const size_t begin = pos;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  if (pos == begin) return std::nullopt;
  if (allow_fraction && pos + 1 < text.size() && text[pos] == '.' && is_digit(text[pos + 1])) {
    ++pos;
    while (pos < text.size() && is_digit(text[pos])) ++pos;
  }
  double value = 0;
  std::from_chars(text.data() + begin, text.data() + pos, value);  // locale-independent
  return value;
}

// Matches "[a,<whitespace>b]" at text[pos] (lmms-eval's regexes); on success `pos` moves past the ']'.
std::optional<Segment> match_bracket_pair(std::string_view text, size_t& pos, bool allow_fraction) {
  size_t at = pos;
  if (at >= text.size() || text[at] != '[') return std::nullopt;
  ++at;
  const std::optional<double> start = read_number(text, at, allow_fraction);
  if (!start || at >= text.size() || text[at] != ',') return std::nullopt;
  ++at;
  while (at < text.size() && is_space(text[at])) ++at;
  const std::optional<double> end = read_number(text, at, allow_fraction);
  if (!end || at >= text.size() || text[at] != ']') return std::nullopt;
  pos = at + 1;
  return Segment{*start, *end};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The caption clean-up of lmms-eval's extract_delta_segments, step for step.
std::string clean_caption(std::string_view raw) {
  std::string text(raw);
  std::replace(text.begin(), text.end(), ':', ' ');
  replace_all(text, "\nFrame ", "");
  std::string_view view = trim(text);
  if (!view.empty() && view.back() == ',') view.remove_suffix(1);
  std::string out(trim(view));
  std::replace(out.begin(), out.end(), '\n', ' ');
  return std::string(trim(out));
}

}  // namespace

double temporal_iou(const Segment& a, const Segment& b) {
  const double start_a = std::min(a.start, a.end), end_a = std::max(a.start, a.end);
  const double start_b = std::min(b.start, b.end), end_b = std::max(b.start, b.end);
  const double intersection = std::max(0.0, std::min(end_a, end_b) - std::max(start_a, start_b));
  const double uni =
      std::min(std::max(end_a, end_b) - std::min(start_a, start_b), (end_a - start_a) + (end_b - start_b));
  return intersection / (uni + 1e-8);
}

Segment rescale_segment(const Segment& source, double total_frames, int num_frames) {
  const double rescale_factor = total_frames / num_frames;
  // Python's int(): truncation toward zero, then back to a frame number.
  return Segment{std::trunc(source.start / rescale_factor), std::trunc(source.end / rescale_factor)};
}

std::optional<Segment> parse_first_segment(std::string_view text) {
  for (size_t pos = text.find('['); pos != std::string_view::npos; pos = text.find('[', pos + 1)) {
    size_t after = pos;
    if (auto segment = match_bracket_pair(text, after, /*allow_fraction=*/true)) return segment;
  }
  return std::nullopt;
}

std::vector<DenseCaption> parse_dense_captions(std::string_view text) {
  std::vector<DenseCaption> captions;
  size_t pos = text.find('[');
  while (pos != std::string_view::npos) {
    size_t after = pos;
    const std::optional<Segment> segment = match_bracket_pair(text, after, /*allow_fraction=*/false);
    if (!segment) {
      pos = text.find('[', pos + 1);
      continue;
    }
    const size_t next = text.find('[', after);
    const size_t stop = next == std::string_view::npos ? text.size() : next;
    captions.push_back({*segment, clean_caption(text.substr(after, stop - after))});
    pos = next;
  }
  return captions;
}

}  // namespace plm::eval
