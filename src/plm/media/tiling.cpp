// PLM's image transforms (core/transforms/image_transform.py), reimplemented from docs/reference.md 4.4.
#include "plm/media/tiling.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "plm/media/image.h"
#include "plm/media/resample.h"

namespace plm::media {
namespace {

/// The grids sharing one aspect key n_w / n_h, in the order the reference's dictionary holds them.
struct AspectGroup {
  double key;
  std::vector<TileGrid> grids;
};

/// The reference's _find_supported_aspect_ratios: tile counts c from max_num_tiles down to 1, divisors x of c
/// ascending, grid (x, c / x) appended under key x / (c / x); keys keep their first-insertion order.
std::vector<AspectGroup> aspect_groups(int64_t max_num_tiles) {
  std::vector<AspectGroup> groups;
  for (int64_t c = max_num_tiles; c >= 1; --c) {
    for (int64_t x = 1; x <= c; ++x) {
      if (c % x != 0) continue;
      const TileGrid grid{x, c / x};
      const double key = static_cast<double>(grid.n_w) / static_cast<double>(grid.n_h);
      auto it = std::find_if(groups.begin(), groups.end(), [&](const AspectGroup& g) { return g.key == key; });
      if (it == groups.end()) {
        groups.push_back({key, {grid}});
      } else {
        it->grids.push_back(grid);
      }
    }
  }
  return groups;
}

/// The reference's _get_image_height_width: the aspect-preserving size of a w x h image fitted into a canvas,
/// one edge fractional and the other floored, both kept as doubles as Python compares them.
std::array<double, 2> fitted_size(int64_t w, int64_t h, int64_t canvas_w, int64_t canvas_h) {
  const double scale = static_cast<double>(w) / static_cast<double>(h);
  const double factor = std::min(static_cast<double>(canvas_w) / static_cast<double>(w),
                                 static_cast<double>(canvas_h) / static_cast<double>(h));
  if (scale > 1.0) {
    const double new_w = factor * static_cast<double>(w);
    return {new_w, std::floor(new_w / scale)};
  }
  const double new_h = factor * static_cast<double>(h);
  return {std::floor(new_h * scale), new_h};
}

/// The reference's _find_closest_aspect_ratio (first minimum, then first maximum, as Python's min/max).
TileGrid closest_aspect_grid(const std::vector<AspectGroup>& groups, int64_t w, int64_t h) {
  const double target = static_cast<double>(w) / static_cast<double>(h);
  const bool wide = target >= 1;
  const AspectGroup* best = nullptr;
  double best_distance = 0;
  for (const AspectGroup& g : groups) {
    if (wide ? !(g.key <= target) : !(g.key > target)) continue;
    const double distance = wide ? std::abs(g.key - target) : std::abs(1 / g.key - 1 / target);
    if (best == nullptr || distance < best_distance) best = &g, best_distance = distance;
  }
  TORCH_CHECK(best != nullptr, "no aspect key on the right side of ", target);  // key 1 (1x1) always qualifies
  TileGrid grid = best->grids.front();
  for (const TileGrid& g : best->grids) {
    if (wide ? g.n_w > grid.n_w : g.n_h > grid.n_h) grid = g;
  }
  return grid;
}

/// ToTensor then Normalize(0.5, 0.5) of every byte value, step by step in float32 as torchvision computes them.
const std::array<float, 256>& normalised_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = (static_cast<float>(i) / 255.0f - 0.5f) / 0.5f;
    return t;
  }();
  return table;
}

/// Writes the s x s block at (y0, x0) of an interleaved RGB image (row_px pixels per row) as normalised
/// channels-first floats into out[3][s][s].
void write_chunk(const uint8_t* rgb, int64_t row_px, int64_t y0, int64_t x0, int64_t s, float* out) {
  const float* value = normalised_values().data();
  for (int64_t y = 0; y < s; ++y) {
    const uint8_t* p = rgb + ((y0 + y) * row_px + x0) * 3;
    float* r = out + y * s;
    float* g = r + s * s;
    float* b = g + s * s;
    for (int64_t x = 0; x < s; ++x, p += 3) {
      r[x] = value[p[0]];
      g[x] = value[p[1]];
      b[x] = value[p[2]];
    }
  }
}

/// `rgb` squashed to w x h with Pillow bicubic, in a per-thread buffer reused by the next call.
const uint8_t* squashed(const at::Tensor& rgb, int64_t w, int64_t h) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < static_cast<size_t>(w * h * 3)) buffer.resize(w * h * 3);
  resize_bicubic_pil(rgb.data_ptr<uint8_t>(), rgb.size(1), rgb.size(0), w, h, buffer.data());
  return buffer.data();
}

/// `rgb` as a contiguous uint8 [H, W, 3] CPU tensor (a copy only if it was not contiguous).
at::Tensor checked_rgb(const at::Tensor& rgb, int64_t tile_size) {
  TORCH_CHECK(rgb.dim() == 3 && rgb.size(2) == 3 && rgb.scalar_type() == at::kByte && rgb.device().is_cpu(),
              "image transforms expect a uint8 CPU tensor [H, W, 3], got ", rgb.sizes(), " ", rgb.scalar_type());
  TORCH_CHECK(tile_size > 0, "tile size must be positive, got ", tile_size);
  return rgb.contiguous();
}

}  // namespace

TileGrid choose_tile_grid(int64_t width, int64_t height, int64_t max_num_tiles, int64_t tile_size) {
  TORCH_CHECK(width > 0 && height > 0 && max_num_tiles > 0 && tile_size > 0, "choose_tile_grid: image ", width, "x",
              height, ", max_num_tiles ", max_num_tiles, ", tile_size ", tile_size, " must all be positive");
  const std::vector<AspectGroup> groups = aspect_groups(max_num_tiles);
  const double scale = static_cast<double>(width) / static_cast<double>(height);
  const TileGrid* best = nullptr;
  std::array<double, 2> best_size{};
  for (const AspectGroup& group : groups) {
    for (const TileGrid& grid : group.grids) {
      const int64_t canvas_w = grid.n_w * tile_size, canvas_h = grid.n_h * tile_size;
      if (canvas_w < width || canvas_h < height) continue;
      const std::array<double, 2> size = fitted_size(width, height, canvas_w, canvas_h);
      // Ties go to the later canvas: the reference compares the fitted shorter edge with >=.
      if (best == nullptr || (scale < 1.0 && size[0] >= best_size[0]) || (scale >= 1.0 && size[1] >= best_size[1])) {
        best = &grid;
        best_size = size;
      }
    }
  }
  return best != nullptr ? *best : closest_aspect_grid(groups, width, height);
}

ImageTiles thumb_and_tiles(const at::Tensor& rgb, int64_t max_num_tiles, int64_t tile_size) {
  const at::Tensor src = checked_rgb(rgb, tile_size);
  const int64_t s = tile_size;
  const TileGrid grid = choose_tile_grid(src.size(1), src.size(0), max_num_tiles, s);
  at::Tensor pixels = empty_pixels({1 + grid.n_w * grid.n_h, 3, s, s}, at::kFloat);
  float* out = pixels.data_ptr<float>();
  write_chunk(squashed(src, s, s), s, 0, 0, s, out);
  const uint8_t* canvas = squashed(src, grid.n_w * s, grid.n_h * s);
  for (int64_t i = 0; i < grid.n_h; ++i) {
    for (int64_t j = 0; j < grid.n_w; ++j) {
      out += 3 * s * s;
      write_chunk(canvas, grid.n_w * s, i * s, j * s, s, out);
    }
  }
  return {pixels, grid};
}

ImageTiles vanilla(const at::Tensor& rgb, int64_t tile_size) {
  const at::Tensor src = checked_rgb(rgb, tile_size);
  at::Tensor pixels = empty_pixels({1, 3, tile_size, tile_size}, at::kFloat);
  write_chunk(squashed(src, tile_size, tile_size), tile_size, 0, 0, tile_size, pixels.data_ptr<float>());
  return {pixels, TileGrid{1, 1}};
}

at::Tensor normalize_to_float(const at::Tensor& u8_chw_or_nchw) {
  TORCH_CHECK(u8_chw_or_nchw.scalar_type() == at::kByte && u8_chw_or_nchw.device().is_cpu(),
              "normalize_to_float expects a uint8 CPU tensor, got ", u8_chw_or_nchw.scalar_type(), " on ",
              u8_chw_or_nchw.device());
  const at::Tensor src = u8_chw_or_nchw.contiguous();
  at::Tensor out = empty_pixels(src.sizes(), at::kFloat);
  const float* value = normalised_values().data();
  const uint8_t* p = src.data_ptr<uint8_t>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0, n = src.numel(); i < n; ++i) o[i] = value[p[i]];
  return out;
}

}  // namespace plm::media
