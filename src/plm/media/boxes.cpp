#include "plm/media/boxes.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "plm/media/media_error.h"

namespace plm::media {
namespace {

// torch.tensor([box], dtype=float32).to(int64), then Pillow's (int) of the double: truncation of the float32.
// Beyond +-2^30 every coordinate lies outside any frame; clamping there keeps the int arithmetic below defined.
int64_t pillow_coordinate(double v) {
  const float f = static_cast<float>(v);
  if (!std::isfinite(f)) throw std::invalid_argument("box coordinate " + std::to_string(v) + " is not finite");
  return static_cast<int64_t>(std::trunc(std::fmax(std::fmin(f, 1073741824.0f), -1073741824.0f)));
}

struct Canvas {
  at::TensorAccessor<uint8_t, 3> px;
  int64_t h, w;

  void point(int64_t x, int64_t y) {
    if (x < 0 || x >= w || y < 0 || y >= h) return;
    px[0][y][x] = 255;
    px[1][y][x] = 0;
    px[2][y][x] = 0;
  }
  // Pillow's hline32: both ends included, clipped.
  void hline(int64_t x0, int64_t y, int64_t x1) {
    for (int64_t x = std::max<int64_t>(x0, 0); x <= std::min(x1, w - 1); ++x) point(x, y);
  }
  // Pillow's line32 for a vertical line: |y1 - y0| points from y0 towards y1, the end point excluded.
  void vline(int64_t x, int64_t y0, int64_t y1) {
    const int64_t step = y1 < y0 ? -1 : 1;
    for (int64_t y = y0; y != y1; y += step) point(x, y);
  }
};

}  // namespace

void draw_box(at::Tensor& frame_chw_u8, double x1, double y1, double x2, double y2) {
  TORCH_CHECK(frame_chw_u8.dim() == 3 && frame_chw_u8.size(0) == 3 && frame_chw_u8.scalar_type() == at::kByte,
              "draw_box expects a uint8 [3, H, W] frame, got ", frame_chw_u8.sizes());
  if (static_cast<float>(x1) > static_cast<float>(x2) || static_cast<float>(y1) > static_cast<float>(y2))
    throw std::invalid_argument("box [" + std::to_string(x1) + ", " + std::to_string(y1) + ", " + std::to_string(x2) +
                                ", " + std::to_string(y2) + "] is not (xmin, ymin, xmax, ymax)");
  const int64_t X0 = pillow_coordinate(x1), Y0 = pillow_coordinate(y1);
  const int64_t X1 = pillow_coordinate(x2), Y1 = pillow_coordinate(y2);
  Canvas c{frame_chw_u8.accessor<uint8_t, 3>(), frame_chw_u8.size(1), frame_chw_u8.size(2)};
  constexpr int64_t width = 4;  // ImagingDrawRectangle's outline loop
  for (int64_t i = 0; i < width; ++i) {
    c.hline(X0, Y0 + i, X1);
    c.hline(X0, Y1 - i, X1);
    c.vline(X1 - i, Y0 + width, Y1 - width + 1);
    c.vline(X0 + i, Y0 + width, Y1 - width + 1);
  }
}

void draw_boxes_on_sampled_frames(DecodedFrames& clip, const std::map<int64_t, std::array<double, 4>>& bbox_map) {
  for (size_t k = 0; k < clip.indices.size(); ++k) {
    const auto it = bbox_map.find(clip.indices[k]);
    if (it == bbox_map.end()) continue;
    at::Tensor frame = clip.frames[static_cast<int64_t>(k)];
    const auto& b = it->second;
    try {
      draw_box(frame, b[0], b[1], b[2], b[3]);
    } catch (const std::invalid_argument& e) {
      throw MediaError("bad_box",
                       "video '" + clip.path + "' frame " + std::to_string(clip.indices[k]) + ": " + e.what() + ".");
    }
  }
}

}  // namespace plm::media
