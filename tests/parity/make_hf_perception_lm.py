#!/usr/bin/env python3
"""Build a tiny random HF PerceptionLM and its PLM-native twin: a parity fixture for the C++ port.

Usage (run with the project venv, CPU only, fp32, seeded, a few seconds):

    .venv/bin/python tests/parity/make_hf_perception_lm.py OUT_DIR [options]

Options:
    --seed N                 RNG seed for weights, tokens and pixels (default 0)
    --cls / --no-cls         vision CLS token: timm arch vit_pe_core_large_patch14_336 (CLS, RoPE grid offset 1)
                             or vit_pe_core_gigantic_patch14_448 (no CLS, offset 0), as the HF converter picks
                             for PLM 1B/3B and 8B (default --cls)
    --dim D --layers L       decoder width / depth (default 32 / 2)
    --n-heads H --n-kv-heads K   decoder heads; K < H is GQA (default 4 / 2)
    --tied / --untied        weight_tying (tie_word_embeddings) (default --tied)
    --pooling R              projector pooling ratio, 1 or 2 (default 2)
    --rope-scale F           integer llama3 RoPE factor; 1 = no scaling (default 32, low 1, high 4, old ctx 8192)
    --vocab V                vocabulary size, must exceed 128003 (default 128256)
    --vision-width W --vision-layers N --vision-heads H   PE tower (default 32 / 2 / 2)
    --image-size S --patch-size P   config tile size and patch (default 32 / 8: a 4x4 grid)
    --ls-init X|none         LayerScale init (gamma present unless none) (default 0.1)
    --interp-size S          feed S x S pixels instead of --image-size, so the absolute position embedding is
                             interpolated at run time (default: off). timm supports this only with
                             dynamic_img_size=True, and then resamples bicubic with antialias and rescales the RoPE
                             grid by ref_feat_shape; PLM resamples bilinear (align_corners=False) and keeps integer
                             RoPE positions. With this option the script builds the model with
                             dynamic_img_size=True, sets the tower's rope.ref_feat_shape to None (timm.create_model
                             drops None kwargs, so this is not in hf/config.json: reloading hf/ needs the same two
                             patches) and patches timm's resample to PLM's rule; expected.json says so.
    --images-per-sample A,B  number of image chunks per batch row (default 1,2: batch of 2)
    --text-len T             text tokens per row besides the longest row's image tokens (default 8)

Files written to OUT_DIR:
    hf/                       save_pretrained output (config.json, model.safetensors, generation_config.json)
    native.safetensors        the same weights under PLM consolidated.pth names (docs/reference.md 1.6), mapped here in Python
                              independently of src/plm/ckpt/name_maps.cpp
    params.json               {"model": {...}} as PLM writes it (the C++ reads the model section)
    inputs.safetensors        input_ids int64 [B,S] (image token 128002 at exactly the image-token positions,
                              images of row 0 first, each image's tokens contiguous), pixel_values f32 [N,3,H,W]
                              (already normalised, N = total images, in row then position order),
                              images_per_sample int64 [B], target int64 [B,S] and loss_mask int64 [B,S]
    expected.safetensors      logits f32 [B,S,V], loss f32 [1], grad.<native name> for every parameter
    expected.json             loss_definition, loss, options, interpolation notes
    interp_check.safetensors  pos_embed (native), pos_embed_interp (to grid G+2 or the --interp-size grid),
                              pos_embed_interp_rect (to grid (G+1, G+2)), computed by PLM's own rule
"""

import argparse
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

IMAGE_TOKEN_ID = 128002  # <|image|> in PLM's tokenizer and PerceptionLMConfig.image_token_id
VIDEO_TOKEN_ID = 128003

LOSS_DEFINITION = (
    "lp = logits.float().log_softmax(-1); loss = mean over b in [0,B), t in [0,S-1) of "
    "-lp[b, t, input_ids[b, t+1]] (next-token NLL over every position but the last; equivalently "
    "target[b,t] = input_ids[b,t+1] with loss_mask 1 for t < S-1 and 0 at t = S-1, mean over the mask)"
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cls", dest="cls", action="store_true", default=True)
    p.add_argument("--no-cls", dest="cls", action="store_false")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--tied", dest="tied", action="store_true", default=True)
    p.add_argument("--untied", dest="tied", action="store_false")
    p.add_argument("--pooling", type=int, default=2, choices=[1, 2])
    p.add_argument("--rope-scale", type=int, default=32)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--vision-width", type=int, default=32)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--vision-heads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--ls-init", default="0.1")
    p.add_argument("--interp-size", type=int, default=0)
    p.add_argument("--images-per-sample", default="1,2")
    p.add_argument("--text-len", type=int, default=8)
    a = p.parse_args(argv)
    a.ls_init = None if a.ls_init == "none" else float(a.ls_init)
    a.images_per_sample = [int(x) for x in a.images_per_sample.split(",")]
    if a.vocab <= VIDEO_TOKEN_ID:
        p.error("--vocab must exceed 128003 so the image and video token ids exist")
    return a


# ---------------------------------------------------------------------------------------------------------------
# PLM config (what PLM's params.json "model" section holds) and the FFN hidden formula [core/transformer.py]


def plm_ffn_hidden(dim, multiplier, multiple_of):
    h = int(2 * (4 * dim) / 3)
    if multiplier is not None:
        h = int(multiplier * h)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def plm_params(a, multiplier, multiple_of):
    return {
        "model": {
            "dim": a.dim,
            "n_layers": a.layers,
            "n_heads": a.n_heads,
            "n_kv_heads": a.n_kv_heads,
            "vocab_size": a.vocab,
            "ffn_dim_multiplier": multiplier,
            "multiple_of": multiple_of,
            "norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scale_factor": a.rope_scale,  # int in PLM's LMTransformerArgs, as the two below
            "low_freq_factor": 1,
            "high_freq_factor": 4,
            "old_context_len": 8192,
            "weight_tying": a.tied,
            "pooling_ratio": a.pooling,
            "max_seqlen": 11520,
            "vision_model": {
                "image_size": a.image_size,
                "patch_size": a.patch_size,
                "width": a.vision_width,
                "layers": a.vision_layers,
                "heads": a.vision_heads,
                "mlp_ratio": 4.0,
                "use_cls_token": a.cls,
                "use_abs_posemb": True,
                "use_ln_post": False,
                "pool_type": "none",
                "ls_init_value": a.ls_init,
            },
        }
    }


# ---------------------------------------------------------------------------------------------------------------
# HF model


def build_hf_model(a, intermediate):
    from transformers import LlamaConfig, PerceptionLMConfig, PerceptionLMForConditionalGeneration, TimmWrapperConfig

    rope = {"rope_type": "default", "rope_theta": 500000.0}
    if a.rope_scale != 1:
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": float(a.rope_scale),
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    text = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.dim,
        intermediate_size=intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads,
        head_dim=a.dim // a.n_heads,
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        max_position_embeddings=11520,
        tie_word_embeddings=a.tied,
        bos_token_id=128000,
        eos_token_id=[128001, 128009],
    )
    grid = a.image_size // a.patch_size
    # Same choices as convert_perception_lm_weights_to_hf.py: the architecture fixes class_token and the RoPE grid
    # offset; model_args override size, truncate to `layers`, drop ln_post and the attention pooler.
    arch = "vit_pe_core_large_patch14_336" if a.cls else "vit_pe_core_gigantic_patch14_448"
    model_args = {
        "embed_dim": a.vision_width,
        "depth": a.vision_layers,
        "num_heads": a.vision_heads,
        "mlp_ratio": 4.0,
        "patch_size": a.patch_size,
        "img_size": (a.image_size, a.image_size),
        "global_pool": "",
        "use_post_transformer_norm": False,
        "init_values": a.ls_init,
        "ref_feat_shape": (grid, grid),
    }
    if a.interp_size:
        model_args["dynamic_img_size"] = True
    vision = TimmWrapperConfig(architecture=arch, model_args=model_args)
    cfg = PerceptionLMConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projector_pooling_ratio=a.pooling,
        vision_use_cls_token=a.cls,
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        tie_word_embeddings=a.tied,
    )
    model = PerceptionLMForConditionalGeneration(cfg).float().eval()
    if a.interp_size:
        # Integer RoPE positions at any grid, as PE's Rope2D. timm.create_model drops None kwargs, so
        # ref_feat_shape=None cannot go through the config; set it on the module instead.
        model.model.vision_tower.timm_model.rope.ref_feat_shape = None
    return model


def randomize(model, seed):
    """Overwrite every parameter with seeded random values, so no tensor is a constant (norms near 1)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "pos_embed" not in name and "cls_token" not in name:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
                if "embed_tokens" in name:
                    v = 0.5 * torch.randn(p.shape, generator=g)
            elif re.search(r"norm\w*\.weight$", name):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            else:
                v = 0.1 * torch.randn(p.shape, generator=g)
            p.copy_(v)


def patch_timm_resample_to_plm():
    """PLM interpolates the abs pos-emb bilinear, align_corners=False, no antialias [core/vision_encoder/pe.py
    _sample_abs_posemb]; timm's Eva uses bicubic + antialias. Make timm follow PLM for this fixture."""
    import timm.layers.pos_embed as tpe
    import timm.models.eva as eva

    orig = tpe.resample_abs_pos_embed

    def plm_resample(posemb, new_size, old_size=None, num_prefix_tokens=1, **kw):
        kw.update(interpolation="bilinear", antialias=False, align_corners=False)
        return orig(posemb, new_size, old_size=old_size, num_prefix_tokens=num_prefix_tokens, **kw)

    eva.resample_abs_pos_embed = plm_resample


# ---------------------------------------------------------------------------------------------------------------
# HF -> native names (independent of the C++ implementation)

TEXT_RULES = [
    (r"^model\.language_model\.embed_tokens\.weight$", "tok_embeddings.weight"),
    (r"^model\.language_model\.norm\.weight$", "norm.weight"),
    (r"^lm_head\.weight$", "output.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.self_attn\.q_proj\.weight$", r"layers.\1.attention.wq.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.self_attn\.k_proj\.weight$", r"layers.\1.attention.wk.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.self_attn\.v_proj\.weight$", r"layers.\1.attention.wv.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"layers.\1.attention.wo.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.mlp\.gate_proj\.weight$", r"layers.\1.feed_forward.w1.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.mlp\.up_proj\.weight$", r"layers.\1.feed_forward.w3.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"layers.\1.feed_forward.w2.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.input_layernorm\.weight$", r"layers.\1.attention_norm.weight"),
    (r"^model\.language_model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"layers.\1.ffn_norm.weight"),
    (r"^model\.multi_modal_projector\.linear_1\.(weight|bias)$", r"vision_projector.projector.0.\1"),
    (r"^model\.multi_modal_projector\.linear_2\.(weight|bias)$", r"vision_projector.projector.2.\1"),
]
V = r"^model\.vision_tower\.timm_model\."
VISION_RULES = [
    (V + r"patch_embed\.proj\.weight$", "vision_model.conv1.weight"),
    (V + r"cls_token$", "vision_model.class_embedding"),
    (V + r"pos_embed$", "vision_model.positional_embedding"),
    (V + r"norm_pre\.(weight|bias)$", r"vision_model.ln_pre.\1"),
    (V + r"norm\.(weight|bias)$", r"vision_model.ln_post.\1"),
    (V + r"blocks\.(\d+)\.norm1\.(weight|bias)$", r"vision_model.transformer.resblocks.\1.ln_1.\2"),
    (V + r"blocks\.(\d+)\.norm2\.(weight|bias)$", r"vision_model.transformer.resblocks.\1.ln_2.\2"),
    (V + r"blocks\.(\d+)\.attn\.qkv\.weight$", r"vision_model.transformer.resblocks.\1.attn.in_proj_weight"),
    (V + r"blocks\.(\d+)\.attn\.qkv\.bias$", r"vision_model.transformer.resblocks.\1.attn.in_proj_bias"),
    (V + r"blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"vision_model.transformer.resblocks.\1.attn.out_proj.\2"),
    (V + r"blocks\.(\d+)\.gamma_1$", r"vision_model.transformer.resblocks.\1.ls_1.gamma"),
    (V + r"blocks\.(\d+)\.gamma_2$", r"vision_model.transformer.resblocks.\1.ls_2.gamma"),
    (V + r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$", r"vision_model.transformer.resblocks.\1.mlp.c_fc.\2"),
    (V + r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$", r"vision_model.transformer.resblocks.\1.mlp.c_proj.\2"),
]


def hf_name_to_native(name):
    for pat, rep in TEXT_RULES + VISION_RULES:
        if re.match(pat, name):
            return re.sub(pat, rep, name)
    raise KeyError(f"no native name for HF key {name}")


def half_to_interleaved(w, n_heads, head_dim):
    """Undo the converter's permute: HF row h*hd + j*hd/2 + i  <-  native row h*hd + 2i + j."""
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()


def interleaved_to_half(w, n_heads, head_dim):
    """The converter's permute (convert_perception_lm_weights_to_hf.py `permute`)."""
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()


def to_native(name, t, a):
    native = hf_name_to_native(name)
    hd = a.dim // a.n_heads
    if native.endswith("attention.wq.weight"):
        t = half_to_interleaved(t, a.n_heads, hd)
    elif native.endswith("attention.wk.weight"):
        t = half_to_interleaved(t, a.n_kv_heads, hd)
    elif native == "vision_model.class_embedding":
        t = t.reshape(-1)  # [1,1,W] -> [W]
    elif native == "vision_model.positional_embedding":
        t = t.reshape(t.shape[-2], t.shape[-1])  # [1,N,W] -> [N,W]
    return native, t.detach().clone().contiguous()


# ---------------------------------------------------------------------------------------------------------------
# PLM's position-embedding interpolation [apps/plm/interpolate_PE_pos_embed.py, pe.py _sample_abs_posemb]


def plm_interpolate_pos_embed(pos, old_grid, new_h, new_w, has_cls):
    cls = None
    if has_cls:
        cls, pos = pos[:1], pos[1:]
    pos = pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).contiguous()
    pos = F.interpolate(pos, size=(new_h, new_w), mode="bilinear", align_corners=False)
    pos = pos.permute(0, 2, 3, 1).reshape(-1, pos.shape[1]).contiguous()
    if has_cls:
        pos = torch.cat([cls, pos], dim=0)
    return pos


# ---------------------------------------------------------------------------------------------------------------


def make_inputs(a, gen):
    px = a.interp_size or a.image_size
    grid = px // a.patch_size
    if grid % a.pooling:
        sys.exit(f"runtime grid {grid} is not divisible by pooling ratio {a.pooling}")
    per_image = (grid // a.pooling) ** 2
    B = len(a.images_per_sample)
    S = per_image * max(a.images_per_sample) + a.text_len
    ids = torch.randint(0, 128000, (B, S), generator=gen, dtype=torch.int64)
    for b, n in enumerate(a.images_per_sample):
        start = 3  # after a few text tokens, as after <|begin_of_text|> and a header
        ids[b, start : start + n * per_image] = IMAGE_TOKEN_ID
    n_images = sum(a.images_per_sample)
    pixels = torch.randn(n_images, 3, px, px, generator=gen)
    target = torch.zeros_like(ids)
    target[:, :-1] = ids[:, 1:]
    loss_mask = torch.ones_like(ids)
    loss_mask[:, -1] = 0
    return ids, pixels, target, loss_mask, grid


def main(argv):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)

    # FFN: choose multiple_of so that PLM's formula gives HF's intermediate_size exactly.
    multiple_of, multiplier = 32, None
    intermediate = plm_ffn_hidden(a.dim, multiplier, multiple_of)

    if a.interp_size:
        patch_timm_resample_to_plm()
    model = build_hf_model(a, intermediate)
    randomize(model, a.seed)
    model.save_pretrained(os.path.join(a.out_dir, "hf"))

    # native weights, mapped independently of the C++ code; cross-check the inverse against the converter's permute
    native = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and a.tied:
            continue  # tied: PLM reuses tok_embeddings (its output.tied_module.weight duplicate is not written)
        k, v = to_native(name, t, a)
        native[k] = v
    hd = a.dim // a.n_heads
    sd = model.state_dict()
    for i in range(a.layers):
        q = sd[f"model.language_model.layers.{i}.self_attn.q_proj.weight"]
        k = sd[f"model.language_model.layers.{i}.self_attn.k_proj.weight"]
        assert torch.equal(interleaved_to_half(native[f"layers.{i}.attention.wq.weight"], a.n_heads, hd), q)
        assert torch.equal(interleaved_to_half(native[f"layers.{i}.attention.wk.weight"], a.n_kv_heads, hd), k)
    save_file(native, os.path.join(a.out_dir, "native.safetensors"))

    params = plm_params(a, multiplier, multiple_of)
    assert plm_ffn_hidden(a.dim, multiplier, multiple_of) == model.config.text_config.intermediate_size
    with open(os.path.join(a.out_dir, "params.json"), "w") as f:
        json.dump(params, f, indent=4)

    gen = torch.Generator().manual_seed(a.seed + 2)
    ids, pixels, target, loss_mask, grid = make_inputs(a, gen)
    save_file(
        {
            "input_ids": ids,
            "pixel_values": pixels.contiguous(),
            "images_per_sample": torch.tensor(a.images_per_sample, dtype=torch.int64),
            "target": target,
            "loss_mask": loss_mask,
        },
        os.path.join(a.out_dir, "inputs.safetensors"),
    )

    # forward + backward in fp32
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, pixel_values=pixels.unsqueeze(0), use_cache=False)
    logits = out.logits.float()
    lp = logits.log_softmax(-1)
    loss = -lp[:, :-1].gather(-1, ids[:, 1:, None]).mean()
    loss.backward()

    expected = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.grad is None:
            sys.exit(f"parameter {name} got no gradient")
        k, g = to_native(name, p.grad, a)
        expected["grad." + k] = g
    save_file(expected, os.path.join(a.out_dir, "expected.safetensors"))

    # PLM's pos-emb interpolation, for the C++ interpolate_pos_embed check
    g0 = a.image_size // a.patch_size
    pos = native["vision_model.positional_embedding"]
    new_grid = grid if grid != g0 else g0 + 2
    save_file(
        {
            "pos_embed": pos,
            "pos_embed_interp": plm_interpolate_pos_embed(pos, g0, new_grid, new_grid, a.cls),
            "pos_embed_interp_rect": plm_interpolate_pos_embed(pos, g0, g0 + 1, g0 + 2, a.cls),
        },
        os.path.join(a.out_dir, "interp_check.safetensors"),
    )

    meta = {
        "loss_definition": LOSS_DEFINITION,
        "loss": loss.item(),
        "image_token_id": IMAGE_TOKEN_ID,
        "tokens_per_image": (grid // a.pooling) ** 2,
        "runtime_grid": grid,
        "config_grid": g0,
        "interp_check": {"old_grid": g0, "new_grid": new_grid, "rect_grid": [g0 + 1, g0 + 2]},
        "vision_pos_embed_interpolation": (
            "timm patched to PLM's rule (bilinear, align_corners=False, no antialias) and rope.ref_feat_shape set to None "
            "after construction; hf/ reloaded without these patches does not reproduce expected.safetensors"
            if a.interp_size
            else "none (runtime grid equals config grid)"
        ),
        "options": {k: v for k, v in vars(a).items() if k != "out_dir"},
        "timm_architecture": model.config.vision_config.architecture,
    }
    with open(os.path.join(a.out_dir, "expected.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {a.out_dir}: loss {loss.item():.6f}, {len(native)} native tensors")


if __name__ == "__main__":
    main(sys.argv[1:])
