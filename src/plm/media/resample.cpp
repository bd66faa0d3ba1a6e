// Pillow's two-pass convolution resize (src/libImaging/Resample.c), reimplemented from its algorithm. Only the
// weights are floating point; the accumulation is exact integer arithmetic, so any summation order (here: SIMD over
// rows or columns) gives Pillow's bytes as long as the weights are computed with Pillow's double expressions.
#include "plm/media/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

// The hot loops are compiled twice, for AVX2 and for baseline x86-64, and picked at load time.
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define PLM_VECTORISED __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef PLM_VECTORISED
#define PLM_VECTORISED
#endif

namespace plm::media {
namespace {

constexpr int kPrecisionBits = 22;  // Pillow: 32 - 8 - 2, leaving room for 8-bit values and negative lobes
constexpr int32_t kRoundHalf = 1 << (kPrecisionBits - 1);
constexpr int64_t kChannels = 3;
constexpr int64_t kBlockRows = 16;  // rows the horizontal pass convolves together
constexpr int64_t kBlockLanes = kBlockRows * kChannels;

/// Keys' cubic convolution kernel with a = -0.5, support 2, evaluated as Pillow writes it (same rounding; the
/// weights would change in the last bit if the compiler fused these products into FMAs, as -mfma with GCC's default
/// -ffp-contract=fast would allow: build without -march flags, or add -ffp-contract=off).
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/// The taps of one axis: output i reads inputs [first[i], first[i] + count[i]) with fixed-point weights
/// coef[i * stride ...].
struct Taps {
  int64_t stride = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> coef;
};

Taps make_taps(int64_t in_size, int64_t out_size) {
  // Pillow computes scale from a float box; sizes below 2^24 are exact in float, so this is the same value.
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  Taps taps;
  taps.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.coef.assign(out_size * taps.stride, 0);
  std::vector<double> w(taps.stride);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    // Truncation toward zero, then clamping, as Pillow's (int) casts.
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t n = hi - lo;
    double sum = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      w[t] = bicubic((static_cast<double>(t + lo) - center + 0.5) * inv_filter_scale);
      sum += w[t];
    }
    int32_t* k = &taps.coef[i * taps.stride];
    for (int64_t t = 0; t < n; ++t) {
      const double v = (sum != 0.0 ? w[t] / sum : w[t]) * (1 << kPrecisionBits);
      k[t] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);  // round half away from zero
    }
    taps.first[i] = lo;
    taps.count[i] = n;
  }
  return taps;
}

uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/// out[l] = clip8(half + sum_t src[t * stride + l] * coef[t]) for l < lanes <= kMaxLanes: one weighted sum of
/// `taps` byte vectors, the kernel of both passes (inlined into each SIMD variant below).
template <int64_t kMaxLanes>
[[gnu::always_inline]] inline void weighted_sum(const uint8_t* __restrict src, int64_t stride,
                                                const int32_t* __restrict coef, int64_t taps, int64_t lanes,
                                                uint8_t* __restrict out) {
  int32_t acc[kMaxLanes];
  for (int64_t l = 0; l < lanes; ++l) acc[l] = kRoundHalf;
  for (int64_t t = 0; t < taps; ++t) {
    const uint8_t* __restrict s = src + t * stride;
    const int32_t c = coef[t];
    for (int64_t l = 0; l < lanes; ++l) acc[l] += s[l] * c;
  }
  for (int64_t l = 0; l < lanes; ++l) out[l] = clip8(acc[l]);
}

/// One output pixel of a horizontal block: kBlockLanes lanes (accumulators stay in registers).
PLM_VECTORISED void convolve_block(const uint8_t* src, const int32_t* coef, int64_t taps, uint8_t* out) {
  weighted_sum<kBlockLanes>(src, kBlockLanes, coef, taps, kBlockLanes, out);
}

/// One output row of the vertical pass, in chunks that keep the accumulators in L1.
PLM_VECTORISED void convolve_row(const uint8_t* src, int64_t stride, const int32_t* coef, int64_t taps, int64_t lanes,
                                 uint8_t* out) {
  constexpr int64_t kChunk = 384;
  for (int64_t l0 = 0; l0 < lanes; l0 += kChunk)
    weighted_sum<kChunk>(src + l0, stride, coef, taps, std::min(kChunk, lanes - l0), out + l0);
}

/// The bytes of a per-thread scratch buffer of at least n bytes. Resizes reuse it for their intermediate image, so
/// a data-loader thread does not page-fault tens of fresh megabytes per image; it keeps the largest size seen.
uint8_t* scratch(std::vector<uint8_t>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

/// Horizontal pass: `rows` rows of `in` (in_w pixels each) to `out` (taps.first.size() pixels each). Blocks of
/// kBlockRows rows are transposed to column-major (column x = 16 rows x 3 channels, contiguous), so each output
/// pixel of the block is one weighted sum of whole columns.
void horizontal_pass(const uint8_t* in, int64_t in_w, int64_t rows, const Taps& taps, uint8_t* out) {
  const int64_t out_w = static_cast<int64_t>(taps.first.size());
  thread_local std::vector<uint8_t> buffer;
  uint8_t* columns = scratch(buffer, in_w * kBlockLanes + 1);
  uint8_t sums[kBlockLanes];
  for (int64_t y0 = 0; y0 < rows; y0 += kBlockRows) {
    const int64_t n = std::min(kBlockRows, rows - y0);  // rows past n in a last, short block hold stale data
    const uint8_t* line = in + y0 * in_w * kChannels;
    // 4-byte copies: the extra byte lands where the next row's (or column's) copy overwrites it. The last pixel of
    // a row is copied with 3 bytes so no read goes past the image.
    for (int64_t x = 0; x < in_w; ++x) {
      uint8_t* col = columns + x * kBlockLanes;
      const uint8_t* pixel = line + x * kChannels;
      if (x + 1 < in_w) {
        for (int64_t r = 0; r < n; ++r) std::memcpy(col + r * kChannels, pixel + r * in_w * kChannels, 4);
      } else {
        for (int64_t r = 0; r < n; ++r) std::memcpy(col + r * kChannels, pixel + r * in_w * kChannels, kChannels);
      }
    }
    for (int64_t x = 0; x < out_w; ++x) {
      convolve_block(columns + taps.first[x] * kBlockLanes, &taps.coef[x * taps.stride], taps.count[x], sums);
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(out + ((y0 + r) * out_w + x) * kChannels, sums + r * kChannels, kChannels);
    }
  }
}

/// Vertical pass: output row y (`width` pixels) is the weighted sum of rows taps.first[y] - row_offset onwards of
/// `in`.
void vertical_pass(const uint8_t* in, int64_t width, const Taps& taps, int64_t row_offset, uint8_t* out) {
  const int64_t row_bytes = width * kChannels;
  for (size_t y = 0; y < taps.first.size(); ++y) {
    convolve_row(in + (taps.first[y] - row_offset) * row_bytes, row_bytes, &taps.coef[y * taps.stride], taps.count[y],
                 row_bytes, out + y * row_bytes);
  }
}

}  // namespace

void resize_bicubic_pil(const uint8_t* src, int64_t in_w, int64_t in_h, int64_t out_w, int64_t out_h, uint8_t* out) {
  TORCH_CHECK(in_h > 0 && in_w > 0 && out_w > 0 && out_h > 0, "resize_bicubic_pil: empty image ", in_w, "x", in_h,
              " or size ", out_w, "x", out_h);
  if (out_w == in_w && out_h == in_h) {
    std::memcpy(out, src, in_w * in_h * kChannels);
    return;
  }
  if (out_h == in_h) return horizontal_pass(src, in_w, in_h, make_taps(in_w, out_w), out);
  const Taps vertical = make_taps(in_h, out_h);
  if (out_w == in_w) return vertical_pass(src, in_w, vertical, 0, out);
  thread_local std::vector<uint8_t> buffer;
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels as the width
  // (checked against Pillow at and around that boundary in tests/parity/image_parity.py).
  if (out_h < in_h && in_h - out_h > 2 * (in_w - out_w)) {
    uint8_t* mid = scratch(buffer, out_h * in_w * kChannels);
    vertical_pass(src, in_w, vertical, 0, mid);
    return horizontal_pass(mid, in_w, out_h, make_taps(in_w, out_w), out);
  }
  // Otherwise horizontal first, over only the input rows the vertical pass reads.
  const int64_t row_first = vertical.first.front();
  const int64_t rows = vertical.first.back() + vertical.count.back() - row_first;
  uint8_t* mid = scratch(buffer, rows * out_w * kChannels);
  horizontal_pass(src + row_first * in_w * kChannels, in_w, rows, make_taps(in_w, out_w), mid);
  vertical_pass(mid, out_w, vertical, row_first, out);
}

at::Tensor resize_bicubic_pil(const at::Tensor& rgb_hwc_u8, int64_t out_w, int64_t out_h) {
  TORCH_CHECK(rgb_hwc_u8.dim() == 3 && rgb_hwc_u8.size(2) == kChannels && rgb_hwc_u8.scalar_type() == at::kByte &&
                  rgb_hwc_u8.device().is_cpu(),
              "resize_bicubic_pil expects a uint8 CPU tensor [H, W, 3], got ", rgb_hwc_u8.sizes(), " ",
              rgb_hwc_u8.scalar_type());
  const at::Tensor src = rgb_hwc_u8.contiguous();
  at::Tensor out = at::empty({out_h, out_w, kChannels}, at::kByte);
  resize_bicubic_pil(src.data_ptr<uint8_t>(), src.size(1), src.size(0), out_w, out_h, out.data_ptr<uint8_t>());
  return out;
}

}  // namespace plm::media
