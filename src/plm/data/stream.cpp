#include "plm/data/stream.h"

#include <algorithm>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace plm::data {

std::string StreamState::to_json() const {
  return nlohmann::json{{"slot", slot}, {"cursors", cursors}}.dump();
}

StreamState StreamState::from_json(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    StreamState s;
    s.slot = j.at("slot").get<int64_t>();
    s.cursors = j.at("cursors").get<std::vector<int64_t>>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("malformed data stream state: ") + e.what());
  }
}

SampleStream::SampleStream(std::vector<double> weights, std::vector<int64_t> sizes, uint64_t seed, StreamState start)
    : sizes_(std::move(sizes)), seed_(seed), state_(std::move(start)) {
  if (weights.empty() || weights.size() != sizes_.size()) throw std::invalid_argument("one weight per dataset");
  double total = 0;
  for (double w : weights) cdf_.push_back(total += w);
  for (double& c : cdf_) c /= total;
  if (state_.cursors.empty()) state_.cursors.assign(sizes_.size(), 0);
  if (state_.cursors.size() != sizes_.size())
    throw std::invalid_argument("the saved data state has " + std::to_string(state_.cursors.size()) +
                                " datasets but the datamix has " + std::to_string(sizes_.size()));
}

int SampleStream::pick_dataset(uint64_t hash) const {
  const double u = static_cast<double>(hash >> 11) * 0x1.0p-53;  // [0, 1)
  const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
  return static_cast<int>(std::min<std::ptrdiff_t>(it - cdf_.begin(), static_cast<std::ptrdiff_t>(cdf_.size()) - 1));
}

Candidate SampleStream::next() {
  const int d = pick_dataset(counter_hash(seed_, static_cast<uint64_t>(state_.slot), 0));
  const int64_t row = state_.cursors[d] % sizes_[d];
  ++state_.cursors[d];
  ++state_.slot;
  return {d, row};
}

Candidate SampleStream::spare(int64_t slot, int attempt) const {
  const uint64_t h = counter_hash(seed_, static_cast<uint64_t>(slot), static_cast<uint64_t>(attempt));
  const int d = pick_dataset(h);
  const uint64_t r = counter_hash(seed_ ^ 0x5DEECE66DULL, static_cast<uint64_t>(slot), static_cast<uint64_t>(attempt));
  return {d, static_cast<int64_t>(r % static_cast<uint64_t>(sizes_[d]))};
}

}  // namespace plm::data
