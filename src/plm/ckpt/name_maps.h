// Tensor-name maps between PLM's native state dict (consolidated.pth names, docs/reference.md 1.6) and the other
// layouts a PLM checkpoint comes in: Hugging Face transformers' PerceptionLM, Perception Encoder (PE) release files and
// Meta's original Llama consolidated.00.pth. Pure renaming plus the few exact re-layouts the formats need
// (decoder q/k row permutation, timm's [1,1,W] / [1,N,W] shapes); nothing is converted in dtype or device.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "plm/common/named_tensors.h"

namespace plm::ckpt {

/// An input key that a mapping left out, and why (one phrase, e.g. "RoPE buffer, recomputed from the config").
struct IgnoredKey {
  std::string key;
  std::string reason;
};

/// What a mapping returns: the mapped tensors in input order, and every input key it did not map.
/// Output tensors share storage with the inputs except where a re-layout is needed (decoder wq/wk).
struct MappedTensors {
  NamedTensors tensors;
  std::vector<IgnoredKey> ignored;
};

/// The decoder facts the HF mapping needs. `weight_tying`: PLM's `model.weight_tying` (HF tie_word_embeddings);
/// when set, an HF `lm_head.weight` or a native `output.weight` / `output.tied_module.weight` is left out.
struct DecoderLayout {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  bool weight_tying = false;
};

/// Native (Meta, interleaved-pair RoPE) rows of a q or k projection -> HF (rotate-half RoPE) rows, as
/// transformers' convert_perception_lm_weights_to_hf.py `permute` does: within each head, native row 2i+j
/// (pair i, member j) becomes HF row j*head_dim/2 + i. `w` is [n_heads*head_dim, ...] (a weight or its gradient);
/// returns a new contiguous tensor of the same shape.
at::Tensor interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads, int64_t head_dim);

/// The inverse of interleaved_to_rotate_half: HF q/k rows -> native rows.
at::Tensor rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads, int64_t head_dim);

/// HF PerceptionLMForConditionalGeneration state dict -> native names. Decoder keys
/// `model.language_model.*` and `lm_head.weight`, projector `model.multi_modal_projector.linear_{1,2}.*`, vision
/// tower `model.vision_tower.timm_model.*` (timm Eva PE names: patch_embed.proj, cls_token [1,1,W], pos_embed
/// [1,N,W], norm_pre, blocks.N.{norm1,norm2,attn.qkv,attn.proj,gamma_1,gamma_2,mlp.fc1,mlp.fc2}, norm).
/// q_proj/k_proj rows are permuted back to the interleaved layout; cls_token/pos_embed lose their leading 1s.
/// Ignored: RoPE buffers (`*rotary_emb.inv_freq`, timm `rope.*`), timm heads PLM does not build (attn_pool, head,
/// fc_norm), a tied `lm_head.weight`, and unknown keys. Throws CheckpointError for a q/k tensor whose rows
/// disagree with the layout, or two keys mapping to one name.
MappedTensors hf_to_native(const NamedTensors& hf, const DecoderLayout& layout);

/// The inverse of hf_to_native (for `plm export --hf`): native -> HF names and layouts. Ignored:
/// `output.tied_module.weight` (and `output.weight` when tied), `rope_embeddings.*` buffers, unknown keys.
/// native -> hf -> native reproduces every mapped tensor exactly.
MappedTensors native_to_hf(const NamedTensors& native, const DecoderLayout& layout);

/// A PE release checkpoint (PE-Core / PE-Lang .pt, already unwrapped from "state_dict" / "weights" by the caller)
/// -> native `vision_model.*` names, by PLM's load_ckpt rules (docs/reference.md 1.2): every "module." is removed; if
/// any key starts with "visual.", only keys containing "visual" are kept and every "visual." is removed. Ignored, as
/// PLM's strict=False load drops them: blocks `transformer.resblocks.j` with j >= `layers`, `attn_pool.*`, `proj`,
/// `ln_post.*` (unless `use_ln_post`), the text tower, and anything else that is not a parameter of PLM's encoder.
/// Throws CheckpointError if two keys map to one name.
MappedTensors pe_checkpoint_to_native(const NamedTensors& pe, int64_t layers, bool use_ln_post = false);

/// PLM's position-embedding resize (apps/plm/interpolate_PE_pos_embed.py, pe.py _sample_abs_posemb):
/// `pos_embed` is [(has_cls ? 1 : 0) + old_grid^2, W]; the grid rows are reshaped to 1 x W x old x old
/// (row-major y, x), resized bilinearly with align_corners=false to new_grid_h x new_grid_w, flattened back, and
/// the CLS row is put back in front. Computes in pos_embed's dtype and device; differentiable.
at::Tensor interpolate_pos_embed(const at::Tensor& pos_embed, int64_t old_grid, int64_t new_grid_h, int64_t new_grid_w,
                                 bool has_cls);

/// Square-grid interpolate_pos_embed, e.g. PE-Core-L14-336 (24) -> 448 tiles (32) for PLM-1B/3B stage 1.
inline at::Tensor interpolate_pos_embed(const at::Tensor& pos_embed, int64_t old_grid, int64_t new_grid, bool has_cls) {
  return interpolate_pos_embed(pos_embed, old_grid, new_grid, new_grid, has_cls);
}

/// Meta's original Llama checkpoint (consolidated.00.pth) -> native decoder names, which are the same names.
/// Ignored: `rope.freqs` (RoPE buffer of older releases), `output.weight` when `weight_tying` (PLM reuses
/// tok_embeddings), and any key that is not a decoder parameter.
MappedTensors meta_llama_to_native(const NamedTensors& meta, bool weight_tying);

}  // namespace plm::ckpt
