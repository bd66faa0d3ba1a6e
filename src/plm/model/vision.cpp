#include "plm/model/vision.h"

#include "plm/common/counter_hash.h"

#include "plm/model/units.h"
#include "plm/ops/ops.h"

namespace plm::model {

VisionAttentionImpl::VisionAttentionImpl(int64_t width, int64_t heads_, const at::TensorOptions& o) : heads(heads_) {
  in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * width, width}, o));
  in_proj_bias = register_parameter("in_proj_bias", at::empty({3 * width}, o));
  out_proj = register_module("out_proj", Linear(width, width, true, o));
}

at::Tensor VisionAttentionImpl::forward(const at::Tensor& x, const RopeTable& rope) const {
  const int64_t n = x.size(0), l = x.size(1), w = x.size(2), hd = w / heads;
  // [N, L, 3, H, hd] -> three [N, H, L, hd]
  const at::Tensor qkv = in_proj_lora.add_to(at::linear(x, in_proj_weight, in_proj_bias), x, is_training())
                             .view({n, l, 3, heads, hd})
                             .permute({2, 0, 3, 1, 4});
  const at::Tensor q = ops::rotate_pairs(qkv[0], rope.cos, rope.sin);
  const at::Tensor k = ops::rotate_pairs(qkv[1], rope.cos, rope.sin);
  const at::Tensor out = ops::attention(q, k, qkv[2], /*causal=*/false, 1.0 / std::sqrt(static_cast<double>(hd)));
  return out_proj->forward(out.transpose(1, 2).reshape({n, l, w}));
}

void VisionAttentionImpl::add_in_proj_lora(int64_t rank, double scale, double dropout) {
  auto host = register_module("in_proj", std::make_shared<torch::nn::Module>());
  in_proj_lora = LoraAdapter::attach(*host, in_proj_weight.size(1), in_proj_weight.size(0), rank, scale, dropout,
                                     in_proj_weight.options());
}

VisionMlpImpl::VisionMlpImpl(int64_t width, int64_t hidden, const at::TensorOptions& o) {
  c_fc = register_module("c_fc", Linear(width, hidden, true, o));
  c_proj = register_module("c_proj", Linear(hidden, width, true, o));
}

at::Tensor VisionMlpImpl::forward(const at::Tensor& x) const {
  return c_proj->forward(at::gelu(c_fc->forward(x)));
}

VisionBlockImpl::VisionBlockImpl(const config::VisionModelArgs& a, const at::TensorOptions& o) {
  ln_1 = register_module("ln_1", LayerNorm(a.width, o));
  attn = register_module("attn", VisionAttention(a.width, a.heads, o));
  ln_2 = register_module("ln_2", LayerNorm(a.width, o));
  mlp = register_module("mlp", VisionMlp(a.width, static_cast<int64_t>(static_cast<double>(a.width) * a.mlp_ratio), o));
  if (a.ls_init_value) {
    auto ls = [&](const char* name) {
      auto holder = register_module(name, std::make_shared<torch::nn::Module>());
      return holder->register_parameter("gamma", at::empty({a.width}, o));
    };
    ls_1 = ls("ls_1");
    ls_2 = ls("ls_2");
  }
}

at::Tensor VisionBlockImpl::forward(const at::Tensor& x, const RopeTable& rope, const DropPathMasks& drop) const {
  auto branch = [](at::Tensor y, const at::Tensor& gamma, const at::Tensor& keep) {
    if (gamma.defined()) y = y * gamma;
    if (keep.defined()) y = y * keep;
    return y;
  };
  const at::Tensor h = x + branch(attn->forward(ln_1->forward(x), rope), ls_1, drop.attn);
  return h + branch(mlp->forward(ln_2->forward(h)), ls_2, drop.mlp);
}

PerceptionEncoderImpl::PerceptionEncoderImpl(const config::VisionModelArgs& a, const at::TensorOptions& o) : args(a) {
  conv1_weight = register_module("conv1", std::make_shared<torch::nn::Module>())
                     ->register_parameter("weight", at::empty({a.width, 3, a.patch_size, a.patch_size}, o));
  if (a.use_cls_token) class_embedding = register_parameter("class_embedding", at::empty({a.width}, o));
  const int64_t grid = a.image_size / a.patch_size;
  if (a.use_abs_posemb)
    positional_embedding =
        register_parameter("positional_embedding", at::empty({(a.use_cls_token ? 1 : 0) + grid * grid, a.width}, o));
  if (a.use_ln_pre) ln_pre = register_module("ln_pre", LayerNorm(a.width, o));
  resblocks = torch::nn::ModuleList();
  for (int64_t j = 0; j < a.layers; ++j) resblocks->push_back(VisionBlock(a, o));
  register_module("transformer", std::make_shared<torch::nn::Module>())->register_module("resblocks", resblocks);
  if (a.use_ln_post) ln_post = register_module("ln_post", LayerNorm(a.width, o));
}

at::Tensor resample_position_embedding(const at::Tensor& pos_embed, int64_t old_grid, int64_t new_h, int64_t new_w,
                                       bool has_cls) {
  const int64_t prefix = has_cls ? 1 : 0;
  TORCH_CHECK(pos_embed.dim() == 2 && pos_embed.size(0) == prefix + old_grid * old_grid, "a position embedding for a ",
              old_grid, "x", old_grid, " grid", has_cls ? " plus CLS" : "", " has ", prefix + old_grid * old_grid,
              " rows, got shape ", pos_embed.sizes());
  TORCH_CHECK(new_h > 0 && new_w > 0, "the target grid must be positive");
  const int64_t width = pos_embed.size(1);
  at::Tensor grid =
      pos_embed.narrow(0, prefix, old_grid * old_grid).reshape({1, old_grid, old_grid, width}).permute({0, 3, 1, 2});
  grid = at::upsample_bilinear2d(grid.contiguous(), {new_h, new_w}, /*align_corners=*/false);
  grid = grid.permute({0, 2, 3, 1}).reshape({new_h * new_w, width});
  return has_cls ? at::cat({pos_embed.narrow(0, 0, 1), grid}, 0) : grid;
}

at::Tensor PerceptionEncoderImpl::position_embedding(int64_t grid_h, int64_t grid_w) const {
  const int64_t grid = args.image_size / args.patch_size;
  if (grid_h == grid && grid_w == grid) return positional_embedding;
  return resample_position_embedding(positional_embedding, grid, grid_h, grid_w, args.use_cls_token);
}

std::vector<DropPathMasks> PerceptionEncoderImpl::draw_drop_path(int64_t n, at::ScalarType dtype,
                                                                 const std::vector<uint64_t>& keys) const {
  std::vector<DropPathMasks> masks;
  if (!is_training() || args.drop_path <= 0) return masks;
  TORCH_CHECK(keys.empty() || static_cast<int64_t>(keys.size()) == n, "draw_drop_path: ", keys.size(),
              " DropPath keys for ", n, " images");
  const double keep = 1.0 - args.drop_path;
  const at::TensorOptions options = conv1_weight.options().dtype(dtype);
  at::Tensor kept;  // [layers, 2, n] of 0/1, from the keys (one copy to the device)
  if (!keys.empty()) {
    kept = at::empty({args.layers, 2, n}, at::kFloat);
    auto a = kept.accessor<float, 3>();
    for (int64_t j = 0; j < args.layers; ++j)
      for (int64_t branch = 0; branch < 2; ++branch)
        for (int64_t i = 0; i < n; ++i)
          a[j][branch][i] = counter_uniform(counter_hash(keys[i], static_cast<uint64_t>(j), branch)) < keep ? 1 : 0;
    kept = kept.to(options).div_(keep);
  }
  auto draw = [&](int64_t j, int64_t branch) {
    if (kept.defined()) return kept[j][branch].view({n, 1, 1});
    return at::empty({n, 1, 1}, options).bernoulli_(keep).div_(keep);
  };
  for (int64_t j = 0; j < args.layers; ++j) {
    DropPathMasks m;
    m.attn = draw(j, 0);
    m.mlp = draw(j, 1);
    masks.push_back(m);
  }
  return masks;
}

at::Tensor PerceptionEncoderImpl::stem(const at::Tensor& images) const {
  const int64_t n = images.size(0), grid_h = images.size(2) / args.patch_size,
                grid_w = images.size(3) / args.patch_size;
  at::Tensor x = at::conv2d(images, conv1_weight, {}, args.patch_size);  // [N, W, gh, gw]
  x = x.permute({0, 2, 3, 1}).reshape({n, grid_h * grid_w, args.width});
  if (args.use_cls_token) x = at::cat({class_embedding.view({1, 1, -1}).expand({n, 1, args.width}), x}, 1);
  if (args.use_abs_posemb) x = x + position_embedding(grid_h, grid_w).unsqueeze(0);
  return ln_pre ? ln_pre->forward(x) : x;
}

at::Tensor PerceptionEncoderImpl::forward(const at::Tensor& images, const std::vector<uint64_t>& drop_path_keys) const {
  UnitRunner* runner = unit_runner.get();
  const PerceptionEncoderImpl* self = this;
  const int64_t n = images.size(0), grid_h = images.size(2) / args.patch_size,
                grid_w = images.size(3) / args.patch_size;
  at::Tensor x = run_unit(
      runner, "vision_model", [self](const at::Tensor& in) { return self->stem(in); }, images);
  // Without rope2d PE uses nn.MultiheadAttention: same packed in_proj and scale, no rotation (zero angles).
  RopeTable rope = vision_rope(args.width / args.heads, grid_h, grid_w, args.use_cls_token);
  if (!args.use_rope2d) rope = {at::ones_like(rope.cos), at::zeros_like(rope.sin)};
  rope = {rope.cos.to(x.device()), rope.sin.to(x.device())};
  const auto drop = draw_drop_path(n, x.scalar_type(), drop_path_keys);
  for (size_t j = 0; j < resblocks->size(); ++j) {
    const auto* block = resblocks->ptr(j)->as<VisionBlockImpl>();
    const DropPathMasks masks = drop.empty() ? DropPathMasks{} : drop[j];
    x = run_unit(
        runner, "vision_model.transformer.resblocks." + std::to_string(j),
        [block, rope, masks, keys = drop_path_keys, j](const at::Tensor& in) {
          LoraDropoutScope scope(keys, LoraDropoutScope::kVisionBlocks + j);
          return block->forward(in, rope, masks);
        },
        x, activation_checkpointing, block->parameters());
  }
  if (ln_post) {
    const LayerNorm post = ln_post;
    x = run_unit(
        runner, "vision_model", [post](const at::Tensor& in) { return post->forward(in); }, x);
  }
  return args.use_cls_token ? x.slice(1, 1) : x;
}

}  // namespace plm::model
