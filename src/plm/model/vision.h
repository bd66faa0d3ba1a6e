// The Perception Encoder as PLM uses it (docs/reference.md 1.2): bias-free patch conv, optional CLS token, absolute
// position embedding (bilinearly resampled when the patch grid differs), ln_pre, pre-norm blocks with packed in_proj,
// 2D RoPE, LayerScale and DropPath; no ln_post, no pooling. Names follow PE's state dict (conv1,
// transformer.resblocks.j...).
#pragma once

#include <torch/nn/modules/container/modulelist.h>

#include "plm/config/args.h"
#include "plm/model/layers.h"
#include "plm/model/rope.h"
#include "plm/model/units.h"

namespace plm::model {

/// `attn`: in_proj_weight [3W, W] (rows q; k; v), in_proj_bias [3W], out_proj; heads are contiguous blocks of W/heads.
/// add_in_proj_lora gives the packed in_proj a LoRA update under the module "in_proj" (timm's attn.qkv).
struct VisionAttentionImpl : torch::nn::Module {
  VisionAttentionImpl(int64_t width, int64_t heads, const at::TensorOptions& options);
  void add_in_proj_lora(int64_t rank, double scale, double dropout);
  /// x [N, L, W]; rope tables [L, hd/2]; non-causal, scale hd^-0.5.
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope) const;
  at::Tensor in_proj_weight, in_proj_bias;
  Linear out_proj{nullptr};
  LoraAdapter in_proj_lora;  // "in_proj.lora_A.weight" [rank, W], "in_proj.lora_B.weight" [3W, rank]
  int64_t heads;
};
TORCH_MODULE(VisionAttention);

/// `mlp`: c_proj(gelu(c_fc(x))) with the exact (erf) GELU.
struct VisionMlpImpl : torch::nn::Module {
  VisionMlpImpl(int64_t width, int64_t hidden, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;
  Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(VisionMlp);

/// Per-sample DropPath keep masks for one block, already divided by the keep probability (timm's DropPath), in the
/// activation dtype, [N, 1, 1]; undefined when DropPath is off. Drawn outside the block so that recomputing the block
/// (activation checkpointing) gives the same result.
struct DropPathMasks {
  at::Tensor attn, mlp;
};

/// `transformer.resblocks.j`: x + drop(ls_1(attn(ln_1(x)))), then x + drop(ls_2(mlp(ln_2(x)))).
/// ls_k.gamma exists only when ls_init_value is set.
struct VisionBlockImpl : torch::nn::Module {
  VisionBlockImpl(const config::VisionModelArgs& args, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const RopeTable& rope, const DropPathMasks& drop = {}) const;
  LayerNorm ln_1{nullptr}, ln_2{nullptr};
  VisionAttention attn{nullptr};
  VisionMlp mlp{nullptr};
  at::Tensor ls_1, ls_2;  // the "gamma" of modules ls_1 / ls_2, or undefined
};
TORCH_MODULE(VisionBlock);

/// PLM's position-embedding resize (pe.py _sample_abs_posemb, apps/plm/interpolate_PE_pos_embed.py): `pos_embed` is
/// [(has_cls ? 1 : 0) + old_grid^2, W]; the grid rows are reshaped to 1 x W x old x old (row-major y, x), resized
/// bilinearly with align_corners=false to new_h x new_w, flattened back, and the CLS row is put back in front.
/// Differentiable; computes in pos_embed's dtype.
at::Tensor resample_position_embedding(const at::Tensor& pos_embed, int64_t old_grid, int64_t new_h, int64_t new_w,
                                       bool has_cls);

/// The vision tower.
struct PerceptionEncoderImpl : torch::nn::Module {
  PerceptionEncoderImpl(const config::VisionModelArgs& args, const at::TensorOptions& options);

  /// images [N, 3, H, W] (normalised; H, W multiples of patch_size) -> [N, (H/p)(W/p), width]: the output of the last
  /// block, CLS row removed. In training mode with drop_path > 0 the DropPath masks come from draw_drop_path.
  at::Tensor forward(const at::Tensor& images, const std::vector<uint64_t>& drop_path_keys = {}) const;

  /// The patch embedding, CLS token, position embedding and ln_pre: images -> [N, (cls) + gh*gw, width].
  at::Tensor stem(const at::Tensor& images) const;

  /// The position embedding for a grid_h x grid_w grid, [(cls) + grid_h*grid_w, width]: the parameter itself when the
  /// grid is the configured one, else bilinearly resampled (align_corners false), the CLS row kept in front.
  at::Tensor position_embedding(int64_t grid_h, int64_t grid_w) const;

  /// The DropPath masks of every block for a batch of `n` (empty when not training or drop_path is 0). With `keys`
  /// (one per image) image i keeps block j's attention branch when counter_uniform(counter_hash(keys[i], j, 0)) <
  /// 1 - drop_path and its MLP branch with (keys[i], j, 1): a function of the key alone, on any device. Without keys
  /// the masks are drawn from the default generator of the parameters' device, in block order.
  std::vector<DropPathMasks> draw_drop_path(int64_t n, at::ScalarType dtype,
                                            const std::vector<uint64_t>& keys = {}) const;

  config::VisionModelArgs args;
  bool activation_checkpointing = false;    // model/activation_checkpoint.h, per resblock
  std::shared_ptr<UnitRunner> unit_runner;  // model/units.h (set through PerceptionLMImpl::set_unit_runner)
  at::Tensor conv1_weight, class_embedding, positional_embedding;  // conv1.weight has no bias
  LayerNorm ln_pre{nullptr}, ln_post{nullptr};  // each only when use_ln_pre / use_ln_post (PLM: pre only)
  torch::nn::ModuleList resblocks{nullptr};     // registered under "transformer"
};
TORCH_MODULE(PerceptionEncoder);

}  // namespace plm::model
