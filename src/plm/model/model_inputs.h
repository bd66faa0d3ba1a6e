// What the model reads for one batch, and the adapter from a collated batch (data/collate.h) to it, which
// training, validation and evaluation share. The model uses data::Batch's fields only (a header-only struct): no
// data/ code is linked into the model.
#pragma once

#include <ATen/ATen.h>

namespace plm::data {
struct Batch;
}

namespace plm::model {

struct ModelInputs {
  at::Tensor tokens;          // int64 [B, S]
  at::Tensor images;          // float [N, 3, H, W], normalised; undefined for a text-only model or batch
  at::Tensor image_mask;      // bool [B, S]: the positions that receive vision vectors, filled in row-major order
  at::Tensor chunk_has_text;  // bool [N] (optional): chunks of text-only samples (dummy images), dropped after the
                              // vision tower as PLM does
};

struct PerceptionLMImpl;

/// `batch` as `model`'s inputs on `device`: its tokens, and its media with their image-token positions when the model
/// has a vision tower (the pixels stay fp32: PerceptionLMImpl::embed casts them to the parameters' dtype).
ModelInputs model_inputs(const PerceptionLMImpl& model, const data::Batch& batch, at::Device device);

}  // namespace plm::model
