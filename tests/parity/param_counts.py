"""Parameter counts: `plm model info` against transformers' PerceptionLM built (on the meta device) from the same
configuration as PLM 1B/3B/8B at stage 3 (LayerScale present, as in the released models).

Usage: param_counts.py PLM_BINARY
"""
import re
import subprocess
import sys
import warnings

import torch
from transformers import LlamaConfig, PerceptionLMConfig, PerceptionLMForConditionalGeneration, TimmWrapperConfig
from transformers.utils import logging

logging.set_verbosity_error()
warnings.filterwarnings("ignore")

# name: (dim, layers, heads, kv heads, ffn, tied, llama3 rope scaling, timm arch, vision depth, vision width)
MODELS = {
    "plm_1b": (2048, 16, 32, 8, 8192, True, True, "vit_pe_core_large_patch14_336", 23, 1024),
    "plm_3b": (3072, 28, 24, 8, 8192, True, True, "vit_pe_core_large_patch14_336", 23, 1024),
    "plm_8b": (4096, 32, 32, 8, 14336, False, False, "vit_pe_core_gigantic_patch14_448", 47, 1536),
}


def hf_counts(dim, layers, heads, kv, ffn, tied, rope, arch, vdepth, vwidth):
    rope_parameters = dict(rope_type="default", rope_theta=500000.0)
    if rope:
        rope_parameters = dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=8192, rope_theta=500000.0)
    text = LlamaConfig(hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                       intermediate_size=ffn, vocab_size=128256, tie_word_embeddings=tied, rms_norm_eps=1e-5,
                       max_position_embeddings=11520, rope_parameters=rope_parameters)
    vision = TimmWrapperConfig(architecture=arch, model_args=dict(
        depth=vdepth, embed_dim=vwidth, global_pool="", img_size=[448, 448], use_post_transformer_norm=False,
        init_values=0.1, ref_feat_shape=[32, 32]))
    config = PerceptionLMConfig(text_config=text, vision_config=vision, projector_pooling_ratio=2,
                                vision_use_cls_token=arch.endswith("336"), tie_word_embeddings=tied)
    with torch.device("meta"):
        m = PerceptionLMForConditionalGeneration(config)
    part = lambda *prefixes: sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefixes))
    return {"decoder": part("model.language_model", "lm_head"), "vision": part("model.vision_tower"),
            "projector": part("model.multi_modal_projector"), "total": sum(p.numel() for p in m.parameters())}


def main():
    plm = sys.argv[1]
    passed = failed = 0
    for name, spec in MODELS.items():
        out = subprocess.run([plm, "model", "info", f"recipes/stage3_sft/{name}.yaml"], capture_output=True, text=True,
                             check=True).stdout
        ours = {m.group(1): int(m.group(2).replace(",", "")) for m in re.finditer(r"^(\w+) +([\d,]+)", out, re.M)}
        theirs = hf_counts(*spec)
        for part, n in theirs.items():
            ok = ours.get(part) == n
            print(f"{'ok  ' if ok else 'FAIL'} {name} {part}: plm {ours.get(part):,} transformers {n:,}")
            passed, failed = passed + ok, failed + (not ok)
    print(f"param counts: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
