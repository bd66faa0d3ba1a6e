"""Export parity: `plm export --hf` folders load in transformers' PerceptionLM and give plm's logits; an HF folder
exported again is bit-identical; `plm export --plm` folders load back into plm with the same logits.

For two odd-shaped random configurations (odd widths and head counts, GQA with one KV head or none, tied and
untied output, pooling 1 and 2, with and without CLS / LayerScale / RoPE scaling, an odd vocabulary) built by
make_hf_perception_lm.py, the plm checkpoint (native names + params.json) is exported and checked:
  - transformers' from_pretrained loads the folder with no missing, unexpected or mis-shaped tensor, and its fp32
    logits equal `plm model forward`'s on the checkpoint within 1e-4 x max |logit|;
  - the second configuration is exported in shards (an index + several files) and as bf16;
  - the HF folder the fixture saved -> `plm export --hf` -> every tensor bit-identical, and the config's model keys equal;
  - `plm export --plm` -> torch.load(weights_only=True) reads consolidated.pth (PLM's names, tied duplicate), and
    `plm model forward` on the folder gives bit-identical logits;
  - the exported tokenizer.json (Llama 3's tiktoken file) gives tiktoken's ids for tokenizer_parity.py's corpus;
  - the image processor that transformers builds from the folder has the model's tile size and the tile count.

Usage: export_parity.py PLM_BINARY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "odd-gqa1-untied-nocls-pool1": ["--dim", "40", "--n-heads", "5", "--n-kv-heads", "1", "--untied", "--no-cls",
                                     "--pooling", "1", "--rope-scale", "1", "--ls-init", "none", "--vision-width", "36",
                                     "--vision-heads", "3", "--vision-layers", "3", "--image-size", "30",
                                     "--patch-size", "6", "--vocab", "128011", "--seed", "3"],
    "odd-mha-tied-cls-pool2": ["--dim", "24", "--n-heads", "3", "--n-kv-heads", "3", "--layers", "3", "--pooling", "2",
                               "--rope-scale", "8", "--vision-width", "20", "--vision-heads", "5", "--vocab", "128259",
                               "--seed", "4"],
}
TOL = 1e-4


def run(*cmd):
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        check(False, f"{' '.join(cmd[:3])} ran ({r.stderr.strip()[-400:]})")
    return r.returncode == 0


def rel_diff(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def model_keys(config):
    """The parts of a config.json that define the model's shapes and numerics."""
    t, v = config["text_config"], config["vision_config"]
    text = {k: t.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_parameters",
                                  "tie_word_embeddings")}
    return {"text": text, "arch": v["architecture"], "vision": v["model_args"],
            "top": {k: config.get(k) for k in ("projector_pooling_ratio", "vision_use_cls_token", "tie_word_embeddings")}}


def hf_logits(folder, inputs):
    from transformers import PerceptionLMForConditionalGeneration

    model, info = PerceptionLMForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    model = model.float().eval()
    problems = {k: v for k, v in info.items() if v}
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].unsqueeze(0), use_cache=False)
    return out.logits.float(), problems


def check_tokenizer(folder, model):
    """Every corpus text of tokenizer_parity.py (those under 20,000 characters: PLM's own cutting of huge inputs is
    not tiktoken's) gets tiktoken's ids from the exported tokenizer.json, and decodes back."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers import AutoTokenizer

    from tokenizer_parity import PAT, SPECIALS, corpus

    ranks = load_tiktoken_bpe(model)
    enc = tiktoken.Encoding(name="llama3", pat_str=PAT, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS)})
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [t for t in corpus() if len(t) < 20000]
    bad = [t for t in texts if tok.encode(t, add_special_tokens=False) != enc.encode(t, allowed_special="all")]
    check(len(texts) > 1000 and not bad, f"tokenizer.json encodes {len(texts)} texts as tiktoken does "
                                         f"({len(bad)} differ: {[b[:40] for b in bad[:3]]})")
    ids = tok.encode("Hello world")
    check(ids[0] == 128000 and tok.decode(ids[1:]) == "Hello world" and len(tok) == 128256,
          f"bos in front, decode round trip, {len(tok)} tokens")


def main():
    plm = sys.argv[1]
    work = tempfile.mkdtemp(prefix="plm_export_parity_")
    try:
        for i, (name, args) in enumerate(CONFIGS.items()):
            fx = os.path.join(work, name)
            subprocess.run([sys.executable, os.path.join(HERE, "make_hf_perception_lm.py"), fx, *args], check=True,
                           capture_output=True)
            native = os.path.join(fx, "native.safetensors")
            inputs = load_file(os.path.join(fx, "inputs.safetensors"))
            ref_out = os.path.join(fx, "plm_logits.safetensors")
            if not run(plm, "model", "forward", "--ckpt", native, "--inputs", os.path.join(fx, "inputs.safetensors"),
                       "--out", ref_out):
                continue
            ref = load_file(ref_out)["logits"]

            # plm -> HF: transformers loads it and agrees with plm.
            hf_dir = os.path.join(fx, "export_hf")
            shard = ["--max-shard-size", "0.0002"] if i == 1 else []
            if run(plm, "export", "--hf", hf_dir, native, *shard):
                if shard:
                    index = json.load(open(os.path.join(hf_dir, "model.safetensors.index.json")))
                    files = sorted(set(index["weight_map"].values()))
                    check(len(files) > 1 and all(os.path.exists(os.path.join(hf_dir, f)) for f in files)
                          and not os.path.exists(os.path.join(hf_dir, "model.safetensors")),
                          f"{name}: sharded export ({len(files)} shards + index)")
                logits, problems = hf_logits(hf_dir, inputs)
                check(not problems, f"{name}: from_pretrained loads every tensor ({problems})")
                d = rel_diff(logits, ref)
                check(d <= TOL, f"{name}: transformers' logits on the export vs plm's (rel {d:.2e})")
                from transformers import AutoImageProcessor

                proc = AutoImageProcessor.from_pretrained(hf_dir)
                size = json.load(open(os.path.join(fx, "params.json")))["model"]["vision_model"]["image_size"]
                check(proc.tile_size == size and proc.max_num_tiles == 1 and proc.vision_input_type == "vanilla",
                      f"{name}: image processor settings ({proc.tile_size}, {proc.max_num_tiles}, {proc.vision_input_type})")

            if i == 1:
                bf = os.path.join(fx, "export_bf16")
                if run(plm, "export", "--hf", bf, native, "--dtype", "bf16"):
                    t = load_file(os.path.join(bf, "model.safetensors"))
                    cfg = json.load(open(os.path.join(bf, "config.json")))
                    check(all(x.dtype == torch.bfloat16 for x in t.values()) and cfg["dtype"] == "bfloat16",
                          f"{name}: --dtype bf16 writes bf16 tensors and says so")
                    logits, _ = hf_logits(bf, inputs)
                    d = rel_diff(logits, ref)
                    check(d <= 3e-2, f"{name}: bf16 export's logits within 3e-2 (rel {d:.2e})")

            # HF -> plm -> HF: bit-identical tensors, same model keys.
            rt = os.path.join(fx, "roundtrip")
            if run(plm, "export", "--hf", rt, os.path.join(fx, "hf")):
                a, b = load_file(os.path.join(fx, "hf", "model.safetensors")), load_file(os.path.join(rt, "model.safetensors"))
                same = set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
                check(same, f"{name}: HF -> plm -> HF tensors bit-identical ({len(a)} tensors; differ: "
                            f"{sorted(set(a) ^ set(b))[:4]})")
                ca = model_keys(json.load(open(os.path.join(fx, "hf", "config.json"))))
                cb = model_keys(json.load(open(os.path.join(rt, "config.json"))))
                check(ca == cb, f"{name}: HF -> plm -> HF config model keys equal ({ca if ca != cb else ''} vs {cb if ca != cb else ''})")

            # plm -> PLM release -> plm.
            rel = os.path.join(fx, "release")
            if run(plm, "export", "--plm", rel, native):
                sd = torch.load(os.path.join(rel, "consolidated.pth"), weights_only=True)
                nat = load_file(native)
                tied = json.load(open(os.path.join(fx, "params.json")))["model"]["weight_tying"]
                want = set(nat) | ({"output.tied_module.weight"} if tied else set())
                check(set(sd) == want and all(torch.equal(sd[k], nat[k]) for k in nat),
                      f"{name}: consolidated.pth holds PLM's names and the same tensors")
                out = os.path.join(fx, "release_logits.safetensors")
                if run(plm, "model", "forward", "--ckpt", rel, "--inputs", os.path.join(fx, "inputs.safetensors"),
                       "--out", out):
                    check(torch.equal(load_file(out)["logits"], ref), f"{name}: --plm export gives identical logits")

        # tokenizer.json: transformers' fast tokenizer from the export encodes as tiktoken does.
        fx = os.path.join(work, list(CONFIGS)[0])
        tok_dir = os.path.join(work, "export_tokenizer")
        llama3 = os.path.join(HERE, "..", "fixtures", "llama3", "tokenizer.model")
        if run(plm, "export", "--hf", tok_dir, os.path.join(fx, "native.safetensors"), "--tokenizer", llama3):
            check_tokenizer(tok_dir, llama3)

        # A checkpoint that lacks a tensor is refused, naming it; nothing half-written is left as model.safetensors.
        fx = os.path.join(work, list(CONFIGS)[0])
        from safetensors.torch import save_file

        bad = os.path.join(work, "bad")
        os.makedirs(bad)
        shutil.copy(os.path.join(fx, "params.json"), bad)
        t = load_file(os.path.join(fx, "native.safetensors"))
        del t["layers.0.feed_forward.w3.weight"]
        save_file(t, os.path.join(bad, "consolidated.safetensors"))
        r = subprocess.run([plm, "export", "--hf", os.path.join(work, "bad_out"), bad], capture_output=True, text=True)
        check(r.returncode == 2 and "layers.0.feed_forward.w3.weight" in r.stderr
              and not os.path.exists(os.path.join(work, "bad_out", "model.safetensors")),
              f"an incomplete checkpoint is refused, naming the tensor ({r.stderr.strip()[:200]})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish("export parity")


if __name__ == "__main__":
    main()
