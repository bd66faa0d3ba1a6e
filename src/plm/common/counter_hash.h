// A counter-based source of randomness: splitmix64 of a combination of a seed and two counters. The same value on
// every platform, device and standard library, and no state to carry: a draw is a function of its coordinates, so
// what uses it (the data stream's order, DropPath's masks) does not depend on the number of ranks, threads or
// resumes before it.
#pragma once

#include <cstdint>

namespace plm {

constexpr uint64_t counter_hash(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (a + 1) + 0xD1B54A32D192ED03ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A hash as a uniform double in [0, 1) (its top 53 bits).
constexpr double counter_uniform(uint64_t hash) { return static_cast<double>(hash >> 11) * 0x1.0p-53; }

}  // namespace plm
