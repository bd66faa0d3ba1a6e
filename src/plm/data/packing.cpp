#include "plm/data/packing.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace plm::data {

std::vector<std::vector<size_t>> first_fit_decreasing(const std::vector<int64_t>& lengths, int64_t row_len) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> rows;
  std::vector<int64_t> room;  // free tokens per row; a micro-batch holds few rows, so a linear scan is enough
  for (const size_t i : order) {
    const int64_t n = lengths[i];
    if (n < 0 || n > row_len)
      throw std::invalid_argument("a sample of " + std::to_string(n) + " tokens does not fit a row of " +
                                  std::to_string(row_len));
    size_t r = 0;
    while (r < rows.size() && room[r] < n) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      room.push_back(row_len);
    }
    rows[r].push_back(i);
    room[r] -= n;
  }
  for (auto& row : rows) std::sort(row.begin(), row.end());
  return rows;
}

PackingStats packing_stats(const std::vector<int64_t>& lengths, int64_t row_len, bool packed) {
  PackingStats s;
  s.samples = static_cast<int64_t>(lengths.size());
  s.rows = packed ? static_cast<int64_t>(first_fit_decreasing(lengths, row_len).size()) : s.samples;
  s.sample_tokens = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  s.row_tokens = s.rows * row_len;
  return s;
}

}  // namespace plm::data
