// Still-image decoding to RGB with the pixels the reference sees: PLM opens images with
// PIL.Image.open(path).convert("RGB"), so JPEG and WebP go through the libraries Pillow uses (libjpeg-turbo,
// libwebp) with Pillow's settings, PNG through libpng (lossless: the same samples as Pillow's own reader), and all
// through Pillow's mode conversions.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <string_view>

namespace plm::media {

/// Decodes the image file at `path`: uint8 [H, W, 3] RGB, contiguous, CPU. The format is recognised by content
/// (first bytes), never by file name.
///
/// Equal to numpy.asarray(PIL.Image.open(path).convert("RGB")) for
///  - JPEG (libjpeg-turbo, integer IDCT, fancy upsampling; greyscale replicated; CMYK/YCCK read with Adobe's
///    inverted polarity and converted as Pillow's CMYK -> RGB; EXIF orientation and ICC profiles not applied);
///  - PNG (1/2/4/8/16-bit grey, grey + alpha, RGB, RGBA, palette; interlaced or not; alpha and tRNS dropped;
///    16-bit colour keeps the high byte, 16-bit grey is clipped to 255 as Pillow's "I;16" -> "RGB" does);
///  - WebP (lossy, lossless, with alpha; first frame of an animation, composited on its canvas).
/// GIF (first frame), BMP, TIFF, PNM, QOI and JPEG 2000 are decoded by FFmpeg and converted with swscale: a best
/// effort that may differ from Pillow (palette transparency, colour conversion of YUV-coded files).
///
/// Throws MediaError, what() naming the file, with reason
///  - "missing_file": no such file, or not a regular file;
///  - "read_error": the file exists but cannot be read;
///  - "unsupported_format": the content is not one of the formats above (a text file named .jpg, HEIC, ...);
///  - "decode_error": empty, truncated (Pillow refuses truncated files too) or corrupt data;
///  - "too_large": more pixels than Pillow's decompression-bomb limit (2 * 89478485), which Pillow refuses.
/// The file is read into a per-thread buffer kept for the next call (it grows to the largest file read).
/// Memory: the decoded picture, 3 bytes per pixel, plus at most 5% and a constant for the decoder's own buffers
/// (measured 1.02x of the RGB for a 241-byte JPEG declaring 57426x1535 pixels; at Pillow's limit ~0.55 GB);
/// tests/tooling/parser_memory.py checks it.
at::Tensor load_image_rgb(const std::string& path);

/// decode_image_rgb(bytes of a file, name for messages): as load_image_rgb, for an image already in memory.
/// `origin` (usually the file path) is what error messages name.
at::Tensor decode_image_rgb(std::string_view bytes, const std::string& origin);

/// An uninitialised contiguous CPU tensor for pixel data (decoded images, model-ready tiles). Buffers of 2 MiB or
/// more are 2 MiB-aligned and advised as transparent huge pages (madvise; a no-op where THP is off): faulting in
/// fresh 4 KiB pages cost about as much as the resizes for a 36-tile output (measured, bench/image_bench.sh).
/// Freed as usual with its last reference.
at::Tensor empty_pixels(at::IntArrayRef sizes, at::ScalarType dtype);

}  // namespace plm::media
