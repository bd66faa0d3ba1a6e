// PLM's image transforms (docs/reference.md 4.4): `vanilla` (one squashed tile) and `thumb+tile` (a squashed thumbnail,
// then the image squashed onto a grid of tiles chosen from its size), with the reference's normalisation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace plm::media {

/// A canvas of n_w x n_h tiles (columns x rows).
struct TileGrid {
  int64_t n_w = 1, n_h = 1;
};

/// The grid PLM's VariableSizeImageTransform picks for a width x height image with at most `max_num_tiles`
/// tiles of tile_size px (docs/reference.md 4.4 steps 2-4): candidate grids grouped by aspect n_w/n_h in first-seen
/// order (tile counts from max_num_tiles down to 1, divisors ascending); among canvases the image fits without
/// downscaling, the last one whose aspect-preserving fitted shorter edge is >= the best so far; failing that, the
/// closest aspect ratio not beyond the image's (>= 1: widest grid of that aspect; < 1: tallest). All positive.
TileGrid choose_tile_grid(int64_t width, int64_t height, int64_t max_num_tiles, int64_t tile_size = 448);

/// Model-ready pixels of one image.
struct ImageTiles {
  /// float32 [1 + n_w * n_h, 3, S, S], contiguous, values (p / 255 - 0.5) / 0.5 in [-1, 1]. For thumb_and_tiles
  /// chunk 0 is the thumbnail and chunk 1 + i * n_w + j the tile in row i, column j; vanilla has one chunk.
  at::Tensor pixels;
  TileGrid grid;
};

/// `thumb+tile`: the whole image squashed to S x S with Pillow bicubic (the thumbnail), then the image squashed to
/// (n_w * S) x (n_h * S) for the grid of choose_tile_grid(W, H, max_num_tiles, S) and cut into row-major tiles.
/// `rgb`: uint8 [H, W, 3] CPU (as load_image_rgb returns). Equal to PLM's VariableSizeImageTransform with
/// use_thumbnail "before" (its padding is a no-op; docs/reference.md 11 item 8).
ImageTiles thumb_and_tiles(const at::Tensor& rgb, int64_t max_num_tiles, int64_t tile_size = 448);

/// `vanilla`: the whole image squashed to S x S with Pillow bicubic; pixels [1, 3, S, S], grid 1 x 1. Equal to
/// PLM's ImageTransform.
ImageTiles vanilla(const at::Tensor& rgb, int64_t tile_size = 448);

/// ToTensor + Normalize(0.5, 0.5) of uint8 pixels already in channels-first order ([3, H, W], [N, 3, H, W], any
/// shape): float32 of the same shape, each value computed as torchvision does in float32, (p / 255 - 0.5) / 0.5,
/// so results are bit-equal. Contiguous output; input on the CPU.
at::Tensor normalize_to_float(const at::Tensor& u8_chw_or_nchw);

}  // namespace plm::media
