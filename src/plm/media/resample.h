// Pillow-compatible bicubic resizing (docs/reference.md 4.4 "PIL bicubic"): the resize torchvision applies to PIL
// images, which the reference uses for the thumbnail and the tile canvas. Bit-identical to Pillow's Image.resize.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace plm::media {

/// Resizes an RGB image to out_w x out_h (a squash: no aspect preservation), equal byte for byte to Pillow's
/// `Image.resize((out_w, out_h), Image.BICUBIC)` on a mode "RGB" image (Pillow 13): two separable passes, the
/// bicubic kernel (a = -0.5) widened by the downscale factor (antialiasing), taps normalised to sum 1 and rounded to
/// 22-bit fixed point, sums rounded half up and clipped to [0, 255] after each pass. The pass order matters for
/// the bytes and is Pillow 13's: vertical first when out_h < H and H - out_h > 2 * (W - out_w), else horizontal
/// first (over only the rows the vertical pass reads).
/// `rgb_hwc_u8`: uint8 CPU tensor [H, W, 3] (H, W >= 1; any strides, copied to contiguous if needed).
/// Returns a new contiguous uint8 tensor [out_h, out_w, 3] (out_w, out_h >= 1). Single-threaded: callers
/// parallelise across images.
at::Tensor resize_bicubic_pil(const at::Tensor& rgb_hwc_u8, int64_t out_w, int64_t out_h);

/// The same on raw buffers: `src` holds in_h rows of in_w RGB pixels (row-major, interleaved, no padding), `out`
/// receives out_h rows of out_w pixels; they must not overlap. The intermediate image lives in a per-thread
/// scratch buffer that is kept between calls (it grows to the largest intermediate seen: ~25 MB for a 36-tile
/// canvas), so repeated calls do not page-fault fresh memory.
void resize_bicubic_pil(const uint8_t* src, int64_t in_w, int64_t in_h, int64_t out_w, int64_t out_h, uint8_t* out);

}  // namespace plm::media
