// The demo dataset's random numbers: splitmix64, the same sequence on every platform and standard library (the
// std:: distributions are not), so one seed gives byte-identical files everywhere.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace plm::demo {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  /// A generator for one sample: its stream depends only on (seed, task, split, index), so samples can be made in
  /// any order, on any number of threads.
  static Rng for_sample(uint64_t seed, std::string_view task, std::string_view split, int64_t index) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the names
    for (const char c : task) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    h = (h ^ '/') * 1099511628211ULL;
    for (const char c : split) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    Rng r(seed ^ h);
    r.state_ += static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ULL;
    r.next();
    return r;
  }

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  /// Uniform in [0, n), n > 0 (the modulo bias is below 2^-50 for the small n used here).
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }

  /// Uniform in [lo, hi], inclusive.
  int between(int lo, int hi) { return lo + below(hi - lo + 1); }

  /// Fisher-Yates shuffle.
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(below(static_cast<int>(i)))]);
  }

  /// `k` distinct values of [0, n), in random order.
  std::vector<int> distinct(int n, int k) {
    std::vector<int> all(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
    shuffle(all);
    all.resize(static_cast<size_t>(k));
    return all;
  }

 private:
  uint64_t state_;
};

}  // namespace plm::demo
