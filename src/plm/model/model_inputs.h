// What the model reads for one batch, and the adapter from a collated batch (data/collate.h) to it, which
// training, validation and evaluation share. The model uses data::Batch's fields only (a header-only struct): no
// data/ code is linked into the model.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace plm::data {
struct Batch;
}

namespace plm::model {

/// The masks may live on the host (model_inputs keeps them there): the model finds their positions where they live,
/// so a training step never waits for the device to learn how many image tokens or media chunks a batch has.
struct ModelInputs {
  at::Tensor tokens;          // int64 [B, S]
  at::Tensor images;          // float [N, 3, H, W], normalised; undefined for a text-only model or batch
  at::Tensor image_mask;      // bool [B, S]: the positions that receive vision vectors, filled in row-major order
  at::Tensor chunk_has_text;  // bool [N] (optional): chunks of text-only samples (dummy images), dropped after the
                              // vision tower as PLM does
  // Packed rows (data/packing.h; both empty otherwise: each row one sequence at positions 0..S-1):
  at::Tensor positions;                        // int64 [B, S] on the model's device: each token's position (RoPE)
  std::vector<std::vector<int64_t>> segments;  // per row, its sequences' lengths; attention stays inside each
  std::vector<uint64_t> drop_path_keys;        // one per chunk of `images` (optional): the key its DropPath masks are a
                                         // function of (model/vision.h), and its LoRA dropout masks (model/lora.h)
                                         // in the vision tower and projector; empty: the default generator's
  std::vector<uint64_t> row_keys;  // one per row (optional): the key of its LoRA dropout masks in the decoder
};

struct PerceptionLMImpl;

/// `batch` as `model`'s inputs: its tokens and media copied to `device` without blocking the host, and its
/// image-token mask and text-only-chunk flags kept on the host, when the model has a vision tower (the pixels stay
/// fp32: PerceptionLMImpl::embed casts them to the parameters' dtype).
ModelInputs model_inputs(const PerceptionLMImpl& model, const data::Batch& batch, at::Device device);

/// The DropPath key of every chunk of `batch` at optimizer step `step` (0-based): a hash of (seed, step, the row's
/// global stream slot, the chunk's index in its row). A chunk's masks then depend on which sample it is, not on the
/// rank, micro-batch or device that runs it, so N ranks draw the masks of 1 rank and a resume draws the same ones.
std::vector<uint64_t> drop_path_keys(const data::Batch& batch, uint64_t seed, int64_t step);

/// The LoRA dropout key of every row of `batch` at step `step`: a hash of (seed, step, the global stream slots of the
/// row's samples), so that, as with drop_path_keys, a row's masks do not depend on the rank, micro-batch or resume.
std::vector<uint64_t> row_keys(const data::Batch& batch, uint64_t seed, int64_t step);

}  // namespace plm::model
