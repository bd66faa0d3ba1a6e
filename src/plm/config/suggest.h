// "Did you mean ...?" for mistyped keys.
#pragma once

#include <string>
#include <vector>

namespace plm::config {

/// Optimal-string-alignment edit distance (insertions, deletions, substitutions, adjacent swaps).
size_t edit_distance(const std::string& a, const std::string& b);

/// The candidate closest to `wanted`, or "" when none is close enough to be a plausible typo
/// (distance at most max(1, len/3)).
std::string closest(const std::string& wanted, const std::vector<std::string>& candidates);

}  // namespace plm::config
