"""Generation parity: `plm generate` against transformers' PerceptionLM `generate` on CPU, greedy.

A small random Hugging Face PerceptionLM (built by make_hf_perception_lm.py, the model-parity fixture) answers a batch
of questions of different lengths about one image, then a batch of text-only questions, through `plm generate` (which
batches and right-pads the prompts and uses its KV cache). transformers then generates for each prompt alone from the
same input ids and pixels (`--dump-inputs`); the new token ids must be identical, stop tokens included.

Usage: generate_parity.py PLM_BINARY
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_hf_perception_lm  # noqa: E402  (the fixture builder: reused, not copied)
from checks import check, finish  # noqa: E402  (the parity scripts' ok/FAIL bookkeeping)

TOKENIZER = os.path.join(HERE, "..", "fixtures", "llama3", "tokenizer.model")
MAX_GEN_LEN = 12
STOP_IDS = [128001, 128009]


def plm_generate(plm, ckpt, work, questions, *media):
    dump = os.path.join(work, "inputs.safetensors")
    args = [plm, "generate", "--ckpt", ckpt, "--tokenizer", TOKENIZER, "--max-gen-len", str(MAX_GEN_LEN),
            "--print-ids", "--dump-inputs", dump, *media]
    for q in questions:
        args += ["--question", q]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, r.stderr.strip()[-400:]
    ids = lambda key: [[int(x) for x in line.split()] for line in re.findall(rf"^{key} ids: ?(.*)$", r.stdout, re.M)]
    return ids("prompt"), ids("generated"), load_file(dump)


def hf_generate(model, prompt_ids, pixels):
    input_ids = torch.tensor([prompt_ids])
    extra = {} if pixels is None else {"pixel_values": pixels.unsqueeze(0)}
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=MAX_GEN_LEN,
                             do_sample=False, eos_token_id=STOP_IDS, pad_token_id=STOP_IDS[0], **extra)
    return out[0, len(prompt_ids):].tolist()


def compare(label, model, questions, prompts, generated, dumped, tokens_per_image):
    check(prompts is not None and len(prompts) == len(questions) == len(generated), f"{label}: plm generate ran"
          + ("" if prompts is not None else f" ({dumped})"))
    if prompts is None:
        return
    lengths = dumped["prompt_lengths"].tolist()
    check(len(set(lengths)) == len(lengths), f"{label}: the prompts have different lengths {lengths}")
    pixels = dumped.get("pixel_values")
    for i, (p, g) in enumerate(zip(prompts, generated)):
        n_image = sum(t == make_hf_perception_lm.IMAGE_TOKEN_ID for t in p)
        check(dumped["input_ids"][i, :len(p)].tolist() == p, f"{label} #{i}: dumped input_ids are the printed prompt")
        check(n_image == (0 if pixels is None else tokens_per_image), f"{label} #{i}: {n_image} image tokens")
        want = hf_generate(model, p, None if pixels is None else pixels[i:i + 1])
        check(g == want, f"{label} #{i}: {len(g)} generated ids equal transformers' ({g[:6]}... vs {want[:6]}...)")
    distinct = max(len(set(g)) for g in generated)
    check(distinct >= 4, f"{label}: the generations vary ({distinct} distinct ids), so equality means something")


def main():
    plm = sys.argv[1]
    work = tempfile.mkdtemp(prefix="plm_generate_parity_")
    try:
        fixture = os.path.join(work, "fixture")
        # Untied output: with tied embeddings a random decoder mostly repeats its last token, which would make
        # equal ids a weak check; untied, the greedy tokens vary and depend on the whole context.
        make_hf_perception_lm.main([fixture, "--seed", "5", "--untied"])
        from transformers import PerceptionLMForConditionalGeneration

        model = PerceptionLMForConditionalGeneration.from_pretrained(os.path.join(fixture, "hf")).float().eval()
        tokens_per_image = (32 // 8 // 2) ** 2  # the fixture's default image 32, patch 8, pooling 2

        image = os.path.join(work, "image.png")
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(image)
        questions = ["What is in the image?", "Describe the colours of this picture in one long and detailed sentence."]
        prompts, generated, dumped = plm_generate(plm, os.path.join(fixture, "hf"), work, questions,
                                                  "--media-type", "image", "--media-path", image)
        compare("image", model, questions, prompts, generated, dumped, tokens_per_image)

        questions = ["Hello!", "Write a short poem about the sea, please, with a rhyme.", "Why is the sky blue?"]
        prompts, generated, dumped = plm_generate(plm, os.path.join(fixture, "hf"), work, questions)
        compare("text-only", model, questions, prompts, generated, dumped, tokens_per_image)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish("generate parity")


if __name__ == "__main__":
    main()
