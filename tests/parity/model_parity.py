"""Model parity: plm's PerceptionLM against Hugging Face transformers' (with timm's PE tower) on CPU.

For several tiny random configurations (CLS or not, GQA or not, tied or untied output, pooling 1 and 2, RoPE
scaling on and off, a position embedding that must be interpolated) make_hf_perception_lm.py builds the HF model,
its outputs and gradients. `plm model forward --backward` must then reproduce, from the HF folder, from the same
weights under native names (safetensors) and from a PLM-style consolidated.pth folder:
  fp32 logits and every parameter's gradient within 1e-4 x their max magnitude, and the loss;
  bf16 logits within 3e-2 x max |logit| of the fp32 reference.
Also checks that a checkpoint with a wrong shape or a missing tensor is refused with a message naming it.

Usage: model_parity.py PLM_BINARY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "cls-gqa-tied-pool2-rope32": [],
    "nocls-mha-untied-pool1-norope": ["--no-cls", "--n-kv-heads", "4", "--untied", "--pooling", "1", "--rope-scale", "1"],
    "cls-interpolated-posemb": ["--interp-size", "48", "--images-per-sample", "1,1"],
}
FP32_TOL, BF16_TOL = 1e-4, 3e-2


def plm_forward(plm, ckpt, fixture, out, *extra):
    return subprocess.run([plm, "model", "forward", "--ckpt", ckpt, "--inputs", os.path.join(fixture, "inputs.safetensors"),
                           "--out", out, *extra], capture_output=True, text=True)


def rel_diff(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def compare(name, got_path, expected, grads=True):
    got = load_file(got_path)
    check(rel_diff(got["logits"], expected["logits"]) <= FP32_TOL, f"{name}: fp32 logits (rel {rel_diff(got['logits'], expected['logits']):.2e})")
    if not grads:
        return
    check(abs(got["loss"].item() - expected["loss"].item()) <= 1e-4 * abs(expected["loss"].item()), f"{name}: loss")
    names = [k for k in expected if k.startswith("grad.")]
    missing = [k for k in names if k not in got]
    worst = max((rel_diff(got[k], expected[k]), k) for k in names if k in got)
    check(not missing and worst[0] <= FP32_TOL, f"{name}: {len(names)} gradients (worst rel {worst[0]:.2e} at {worst[1]}; missing {missing[:3]})")


def write_consolidated(fixture, folder):
    """PLM's consolidated.pth layout: torch.save of the state dict, tied duplicate included, + params.json."""
    os.makedirs(folder, exist_ok=True)
    native = load_file(os.path.join(fixture, "native.safetensors"))
    params = json.load(open(os.path.join(fixture, "params.json")))
    sd = OrderedDict(native)
    if params["model"]["weight_tying"]:
        sd["output.tied_module.weight"] = sd["tok_embeddings.weight"]
    torch.save(sd, os.path.join(folder, "consolidated.pth"))
    shutil.copy(os.path.join(fixture, "params.json"), folder)


def main():
    plm = sys.argv[1]
    work = tempfile.mkdtemp(prefix="plm_model_parity_")
    try:
        for name, args in CONFIGS.items():
            fixture = os.path.join(work, name)
            subprocess.run([sys.executable, os.path.join(HERE, "make_hf_perception_lm.py"), fixture, *args],
                           check=True, capture_output=True)
            expected = load_file(os.path.join(fixture, "expected.safetensors"))
            interpolated = "--interp-size" in args  # timm needs patches to reload this HF folder: native only
            sources = {"native safetensors": os.path.join(fixture, "native.safetensors")}
            if not interpolated:
                sources["HF folder"] = os.path.join(fixture, "hf")
            consolidated = os.path.join(fixture, "consolidated")
            write_consolidated(fixture, consolidated)
            sources["consolidated.pth"] = consolidated
            for label, ckpt in sources.items():
                out = os.path.join(fixture, "out.safetensors")
                r = plm_forward(plm, ckpt, fixture, out, "--backward")
                check(r.returncode == 0, f"{name} / {label}: plm model forward ran" +
                      ("" if r.returncode == 0 else f" ({r.stderr.strip()[-300:]})"))
                if r.returncode == 0:
                    compare(f"{name} / {label}", out, expected)
            out = os.path.join(fixture, "bf16.safetensors")
            r = plm_forward(plm, sources["native safetensors"], fixture, out, "--dtype", "bf16")
            if r.returncode == 0:
                d = rel_diff(load_file(out)["logits"], expected["logits"])
                check(d <= BF16_TOL, f"{name}: bf16 logits within {BF16_TOL} of fp32 (rel {d:.2e})")
            else:
                check(False, f"{name}: bf16 forward failed: {r.stderr[-300:]}")

        # A checkpoint that does not fit: a wrong shape, then a missing tensor. Each must be named.
        fixture = os.path.join(work, "cls-gqa-tied-pool2-rope32")
        native = load_file(os.path.join(fixture, "native.safetensors"))
        bad = os.path.join(work, "bad")
        os.makedirs(bad)
        shutil.copy(os.path.join(fixture, "params.json"), bad)
        wrong = dict(native)
        wrong["layers.1.attention.wq.weight"] = wrong["layers.1.attention.wq.weight"][:-1]
        save_file(wrong, os.path.join(bad, "consolidated.safetensors"))
        r = plm_forward(plm, bad, fixture, os.path.join(work, "x.safetensors"))
        check(r.returncode != 0 and "layers.1.attention.wq.weight" in r.stderr, f"wrong shape is named ({r.stderr.strip()[:200]})")
        missing = dict(native)
        del missing["vision_model.transformer.resblocks.0.mlp.c_fc.bias"]
        save_file(missing, os.path.join(bad, "consolidated.safetensors"))
        r = plm_forward(plm, bad, fixture, os.path.join(work, "x.safetensors"))
        check(r.returncode != 0 and "vision_model.transformer.resblocks.0.mlp.c_fc.bias" in r.stderr,
              f"missing tensor is named ({r.stderr.strip()[:200]})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish("model parity")


if __name__ == "__main__":
    main()
