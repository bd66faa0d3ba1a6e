#include "plm/text/region.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace plm::text {

std::string format_bbox(const std::array<double, 4>& b, double width, double height) {
  const double corners[4] = {b[0] / width, b[1] / height, (b[0] + b[2]) / width, (b[1] + b[3]) / height};
  std::string out = "[";
  for (int i = 0; i < 4; ++i) {
    const double v = std::max(std::min(corners[i], 0.999), 0.0);
    std::string digits = std::to_string(static_cast<long long>(v * 1000));  // int() truncates
    if (digits.size() < 3) digits.insert(0, 3 - digits.size(), '0');
    out += (i ? "," : "") + digits;
  }
  return out + "]";
}

std::string substitute_regions(const std::string& text, const std::vector<std::string>& boxes) {
  static const std::string open = "<|bbox", close = "|>";
  std::string out;
  size_t done = 0, at = 0;
  while ((at = text.find(open, at)) != std::string::npos) {
    size_t end = at + open.size();
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
    if (end == at + open.size() || text.compare(end, close.size(), close) != 0) {
      ++at;
      continue;
    }
    const size_t k = std::stoull(text.substr(at + open.size(), end - at - open.size()));
    if (k >= boxes.size())
      throw std::out_of_range("the text refers to <|bbox" + std::to_string(k) + "|> but the sample has " +
                              std::to_string(boxes.size()) + " bbox entries.");
    out.append(text, done, at - done);
    out += boxes[k];
    done = at = end + close.size();
  }
  out.append(text, done, std::string::npos);
  return out;
}

}  // namespace plm::text
