// Region text for grounding samples (docs/reference.md 4.1, core/transforms/region_transform.py).
#pragma once

#include <array>
#include <string>
#include <vector>

namespace plm::text {

/// A box [x, y, w, h] in pixels of a width x height image as PLM writes it: corners normalised to
/// [x/W, y/H, (x+w)/W, (y+h)/H], each clamped to [0, 0.999], as int(v * 1000) zero-padded to 3 digits:
/// "[040,482,112,576]".
std::string format_bbox(const std::array<double, 4>& xywh, double width, double height);

/// Replaces every "<|bboxK|>" in `text` with boxes[K]. Throws std::out_of_range naming K when there is no such box.
std::string substitute_regions(const std::string& text, const std::vector<std::string>& boxes);

}  // namespace plm::text
