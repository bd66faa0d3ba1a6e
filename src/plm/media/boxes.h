// Region boxes drawn onto video frames before resizing (docs/reference.md 4.5 step 6): torchvision's
// `draw_bounding_boxes(frame, boxes, colors=(255, 0, 0), width=4)`, which draws through Pillow's
// ImageDraw.rectangle, reproduced pixel for pixel.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <map>

#include "plm/media/video.h"

namespace plm::media {

/// Draws the outline of box (x1, y1, x2, y2) in pixels, red (255, 0, 0), 4 pixels wide, into `frame_chw_u8`
/// (uint8 [3, H, W], any strides; modified in place), as torchvision + Pillow do: coordinates go through float32
/// and int64 truncation; rows y1..y1+3 and y2-3..y2 span x1..x2, columns x1..x1+3 and x2-3..x2 span the rows
/// between (Pillow's vertical lines stop one pixel short); everything outside the frame is clipped.
/// Throws std::invalid_argument when x1 > x2 or y1 > y2 (after float32 rounding) or a coordinate is not finite:
/// torchvision raises ValueError there.
void draw_box(at::Tensor& frame_chw_u8, double x1, double y1, double x2, double y2);

/// Draws bbox_map[i] on every frame of `clip` whose original frame index i is a key (the reference looks each
/// sampled index up as a string key). Throws MediaError "bad_box" naming clip.path for a box draw_box refuses.
void draw_boxes_on_sampled_frames(DecodedFrames& clip, const std::map<int64_t, std::array<double, 4>>& bbox_map);

}  // namespace plm::media
