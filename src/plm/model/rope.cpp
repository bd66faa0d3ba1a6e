#include "plm/model/rope.h"

#include <cmath>

namespace plm::model {
namespace {

// 1 / theta^(arange(0, dim, 2)[: dim / 2] / dim) in fp32, as both reference implementations compute it.
at::Tensor inverse_frequencies(double theta, int64_t dim) {
  const at::Tensor exponents = at::arange(0, dim, 2, at::kLong).slice(0, 0, dim / 2).to(at::kFloat) / dim;
  return 1.0 / at::pow(theta, exponents);
}

}  // namespace

at::Tensor decoder_frequencies(const config::ModelArgs& a, int64_t head_dim) {
  at::Tensor freqs = inverse_frequencies(a.rope_theta, head_dim);
  if (a.rope_scale_factor == 1) return freqs;
  // PLM's apply_scaling runs element by element on fp32 scalars: keep every operation in float.
  const float low_wavelen = static_cast<float>(static_cast<double>(a.old_context_len) / a.low_freq_factor);
  const float high_wavelen = static_cast<float>(static_cast<double>(a.old_context_len) / a.high_freq_factor);
  const auto factor = static_cast<float>(a.rope_scale_factor);
  const auto two_pi = static_cast<float>(2 * M_PI);
  auto f = freqs.accessor<float, 1>();
  for (int64_t i = 0; i < freqs.size(0); ++i) {
    const float freq = f[i];
    const float wavelen = two_pi / freq;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f[i] = freq / factor;
      continue;
    }
    const float smooth = (static_cast<float>(a.old_context_len) / wavelen - static_cast<float>(a.low_freq_factor)) /
                         static_cast<float>(a.high_freq_factor - a.low_freq_factor);
    f[i] = (1 - smooth) * freq / factor + smooth * freq;
  }
  return freqs;
}

RopeTable decoder_rope(const at::Tensor& frequencies, int64_t seqlen) {
  const at::Tensor angles =
      at::outer(at::arange(seqlen, frequencies.options().dtype(at::kLong)).to(at::kFloat), frequencies);
  return {angles.cos(), angles.sin()};
}

RopeTable vision_rope(int64_t head_dim, int64_t grid_h, int64_t grid_w, bool use_cls_token) {
  const at::Tensor freqs = inverse_frequencies(10000.0, head_dim / 2);  // [D/4]
  const int64_t offset = use_cls_token ? 1 : 0;
  const at::Tensor y = at::outer(at::arange(grid_h, at::kLong).add(offset).to(at::kFloat), freqs);  // [gh, D/4]
  const at::Tensor x = at::outer(at::arange(grid_w, at::kLong).add(offset).to(at::kFloat), freqs);  // [gw, D/4]
  at::Tensor angles =
      at::cat({x.unsqueeze(0).expand({grid_h, grid_w, -1}), y.unsqueeze(1).expand({grid_h, grid_w, -1})}, -1)
          .reshape({grid_h * grid_w, head_dim / 2});
  if (use_cls_token) angles = at::cat({at::zeros({1, head_dim / 2}, at::kFloat), angles}, 0);
  return {angles.cos(), angles.sin()};
}

}  // namespace plm::model
