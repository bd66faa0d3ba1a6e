// The global sample stream (docs/ARCHITECTURE.md "Data": the data stream is a function of (seed, global sample index)).
//
// Slot j of the stream is the j-th sample of training, counted over all ranks. Its dataset is drawn from the
// datamix weights by a hash of (seed, j); its row is that dataset's next row in file order (cycling: one pass is an
// epoch of that dataset). Every rank computes every slot (a hash and a counter: ~20 ns) and decodes only its own,
// so the stream does not depend on the number of ranks or worker threads. A slot whose sample cannot be used is
// refilled from spare draws (dataset and row by a hash of (seed, j, attempt)), which are also the same everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plm/common/counter_hash.h"  // the stream's source of randomness

namespace plm::data {

/// A (dataset, row) to read.
struct Candidate {
  int dataset = 0;
  int64_t row = 0;
};

/// Where the stream is: the next slot, and how many rows each dataset has handed out before it.
struct StreamState {
  int64_t slot = 0;
  std::vector<int64_t> cursors;

  /// {"slot": n, "cursors": [...]} and back; from_json throws std::invalid_argument for a malformed text.
  std::string to_json() const;
  static StreamState from_json(const std::string& json);
};

class SampleStream {
 public:
  /// `weights` normalised or not (> 0), `sizes` the rows per dataset (> 0).
  SampleStream(std::vector<double> weights, std::vector<int64_t> sizes, uint64_t seed, StreamState start = {});

  /// The candidate of the next slot; advances the state.
  Candidate next();

  /// The spare candidate `attempt` (>= 1) of slot `slot`, for when earlier ones could not be used.
  Candidate spare(int64_t slot, int attempt) const;

  /// The state before the next slot.
  const StreamState& state() const { return state_; }

 private:
  int pick_dataset(uint64_t hash) const;

  std::vector<double> cdf_;
  std::vector<int64_t> sizes_;
  uint64_t seed_;
  StreamState state_;
};

}  // namespace plm::data
