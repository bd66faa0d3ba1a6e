// Sequence packing: a micro-batch's samples laid into as few rows as hold them, each sample attending only to its
// own tokens (docs/ARCHITECTURE.md "Data", "Packing"). The reference pads every sample to its own row of
// model.max_seqlen; packing keeps the same samples, loss tokens and gradients and drops most of the padding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace plm::data {

/// First-fit decreasing: the items of `lengths` (the tokens each takes in a row, each in [0, row_len]) placed
/// longest first (ties: the lower index first), each into the first row that still has room for it, or into a new
/// row. Returns the rows, each listing its items' indices in increasing order (stream order); rows are in the order
/// they were opened. Every index appears exactly once; an item longer than row_len throws std::invalid_argument.
std::vector<std::vector<size_t>> first_fit_decreasing(const std::vector<int64_t>& lengths, int64_t row_len);

/// What packing one micro-batch gives: rows made, and the tokens in them.
struct PackingStats {
  int64_t samples = 0, rows = 0, sample_tokens = 0, row_tokens = 0;  // row_tokens = rows x row length
  void add(const PackingStats& o) {
    samples += o.samples;
    rows += o.rows;
    sample_tokens += o.sample_tokens;
    row_tokens += o.row_tokens;
  }
  /// Sample tokens / row tokens (1 = no padding); 0 when nothing was packed.
  double efficiency() const {
    return row_tokens > 0 ? static_cast<double>(sample_tokens) / static_cast<double>(row_tokens) : 0.0;
  }
};

/// The stats of first_fit_decreasing(lengths, row_len) (`packed`), or of one row per item (`!packed`, the reference).
PackingStats packing_stats(const std::vector<int64_t>& lengths, int64_t row_len, bool packed);

}  // namespace plm::data
