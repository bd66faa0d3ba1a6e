// Rotary position tables: the decoder's 1D RoPE with Llama-3 frequency scaling (docs/reference.md 1.5) and the
// Perception Encoder's 2D RoPE (docs/reference.md 1.2). Both give one angle per rotated pair, applied by
// ops::rotate_pairs.
#pragma once

#include <ATen/ATen.h>

#include "plm/config/args.h"

namespace plm::model {

/// cos and sin of the rotation angle of each pair, fp32, [positions, head_dim / 2].
struct RopeTable {
  at::Tensor cos, sin;
};

/// The decoder's inverse frequencies, fp32 [head_dim / 2]: 1 / theta^(2i / head_dim), then, when
/// rope_scale_factor != 1, Llama 3's piecewise scaling computed in fp32 exactly as PLM's apply_scaling.
at::Tensor decoder_frequencies(const config::ModelArgs& args, int64_t head_dim);

/// Angles position * frequency for positions 0..seqlen-1 (fp32 outer product), as cos/sin tables.
RopeTable decoder_rope(const at::Tensor& frequencies, int64_t seqlen);

/// The Perception Encoder's 2D table for a grid_h x grid_w patch grid (row-major tokens): pairs 0..D/4-1 rotate by
/// the column (x) position, pairs D/4..D/2-1 by the row (y) position, with frequencies 10000^(-2i/(D/2)). With a
/// CLS token, positions start at 1 and a zero-angle row for the CLS token comes first.
RopeTable vision_rope(int64_t head_dim, int64_t grid_h, int64_t grid_w, bool use_cls_token);

}  // namespace plm::model
