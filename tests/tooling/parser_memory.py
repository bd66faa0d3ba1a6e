"""The memory bounds stated in the parsers' headers, checked on hostile inputs of random shape and size.

Usage: parser_memory.py PARSER_MEMORY_BINARY [SEED]
Each case writes one input (the shapes that cost a parser the most per byte: tiny values, deep nesting, short
lines, many small tensors), runs `parser_memory PARSER FILE` (tests/tooling/parser_memory.cpp: the peak heap during
the parse) and requires peak <= per_byte * size + constant, the bound written in the header named beside it.
A refused input must be bounded too. Exit 1 on any bound exceeded.
"""

import base64
import collections
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

MiB = 1 << 20

# parser -> (bytes per input byte, constant bytes, where it is stated)
BOUNDS = {
    "recipe": (8, 128 * MiB, "src/plm/config/source.h"),
    "sample": (48, 1 * MiB, "src/plm/data/sample.h"),
    "jsonl_index": (16, 1 * MiB + 64 * 1024, "src/plm/data/jsonl_source.h"),
    "tiktoken": (16, 1 * MiB, "src/plm/text/tiktoken_bpe.h"),
    "encode": (16, 1 * MiB, "src/plm/text/tiktoken_bpe.h"),
    "sentencepiece": (32, 1 * MiB, "src/plm/text/sentencepiece_tokenizer.h"),
    "safetensors": (16, 1 * MiB, "src/plm/ckpt/safetensors.h"),
    "pickle": (150, 1 * MiB, "src/plm/ckpt/torch_pickle.h"),
    "image": (None, 1 * MiB, "src/plm/media/image.h"),  # per pixel: 3.15 bytes (3 of RGB + 5%)
}


def turn(who, value):
    return {"from": who, "value": value}


def sample_cases(rng, n):
    qa = [turn("human", "q"), turn("gpt", "a")]
    k = n // 8
    return {
        "deep nesting": '{"conversations": ' + json.dumps(qa) + ', "x": ' + "[" * (n // 2) + "]" * (n // 2) + "}",
        "tiny numbers": json.dumps({"conversations": qa, "x": [rng.randrange(10) for _ in range(n // 2)]}),
        "many keys": json.dumps({"conversations": qa, "x": {str(i): 0 for i in range(k)}}),
        "many turns": json.dumps({"conversations": [turn("human", ""), turn("gpt", "")] * (n // 60)}),
        "many images": json.dumps({"conversations": qa, "image": ["a"] * (n // 4)}),
        "many boxes": json.dumps({"conversations": qa, "video": "v.mp4",
                                  "bbox_map": {str(i): [0, 0, 1, 1] for i in range(n // 20)}}),
        "an over-long row": "{" + " " * (17 * MiB) + "}",
    }


def recipe_cases(rng, n):
    values = 99000
    return {
        "a flow list of zeros": "x: [" + ",".join("0" for _ in range(n // 2)) + "]\n",
        "a block list": "x:\n" + "".join("- 0\n" for _ in range(n // 4)),
        "many keys": "x:\n" + "".join(f"  k{i}: 0\n" for i in range(n // 10)),
        "a list just under the value limit": "x: [" + ",".join("0" for _ in range(values)) + "]\n",
        "one long scalar": "x: \"" + "a" * (n * rng.randint(1, 8)) + "\"\n",
        "deep flow nesting": "x: " + "[" * (n // 2) + "]" * (n // 2) + "\n",
        "a list at the nesting limit": "x: " + "[" * 200 + "0," * 90000 + "0" + "]" * 200 + "\n",
    }


def tiktoken_case(rng, n):
    lines, size = [], 0
    while size < n:
        i = len(lines)
        lines.append(base64.b64encode(i.to_bytes(3, "big")).decode() + f" {i}\n")
        size += len(lines[-1])
    return {"short distinct tokens": "".join(lines)}


def sentencepiece_cases(rng, n):
    from sentencepiece import sentencepiece_model_pb2 as pb  # the library's own schema

    out = {}
    for name, kind in (("BPE", pb.TrainerSpec.BPE), ("unigram", pb.TrainerSpec.UNIGRAM)):
        m = pb.ModelProto()
        m.trainer_spec.model_type = kind
        m.normalizer_spec.name = "identity"
        m.normalizer_spec.add_dummy_prefix = False
        unk = m.pieces.add()
        unk.piece, unk.type = "<unk>", pb.ModelProto.SentencePiece.UNKNOWN
        for i in range(n // 14):  # the shortest distinct pieces: ~13 bytes each in the protobuf
            p = m.pieces.add()
            p.piece, p.score = format(i, "x"), -float(i)
        out[f"{name}, short pieces"] = m.SerializeToString()
    return out


def encode_cases(rng, n):
    return {
        "spaces": " a" * (n // 2),
        "digits": "".join(rng.choice("0123456789") for _ in range(n)),
        "letters": "ab" * (n // 2),
        "CJK": "".join(chr(0x4E00 + rng.randrange(5000)) for _ in range(n // 3)),
        "invalid UTF-8": bytes(rng.randrange(0x80, 0x100) for _ in range(n)),
    }


def safetensors_cases(rng, n):
    count = n // 60
    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(count)}
    deep = {f"t{i}": {"dtype": "F32", "shape": [1] * 64, "data_offsets": [4 * i, 4 * i + 4]}
            for i in range(count // 4)}
    out = {}
    for name, h in (("many one-element tensors", header), ("64-dimension shapes", deep)):
        blob = json.dumps(h, separators=(",", ":")).encode()
        out[name] = struct.pack("<Q", len(blob)) + blob + bytes(4 * len(h))
    return out


def pickle_cases(rng, n):
    import torch  # the reference writer

    count = n // 100
    objects = {
        "many tensors": collections.OrderedDict((f"t{i}", torch.zeros(1)) for i in range(count)),
        "lists of small ints": {"x": [[rng.randrange(256)] * 10 for _ in range(n // 25)], "w": torch.zeros(2)},
        "many dict keys": {"x": {str(i): i for i in range(n // 20)}, "w": torch.zeros(2)},
    }
    out = {}
    for name, obj in objects.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        out[name] = buf.getvalue()
    return out


def image_cases(rng, n):
    """JPEGs that declare many more pixels than their data holds: a small picture whose frame header (SOF0) is
    rewritten to a large size, so that the decoder allocates the whole picture from a few hundred bytes."""
    from PIL import Image

    out = {}
    for name, (w, h) in {"wide": (rng.randint(20000, 60000), 1500), "tall": (1200, rng.randint(20000, 60000)),
                         "square": (rng.randint(5000, 9000),) * 2}.items():
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (rng.randrange(256), 0, 0)).save(buf, format="JPEG")
        data = bytearray(buf.getvalue())
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
        out[f"{name} {w}x{h}"] = (bytes(data), w * h)
    return out


def pickle_size(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return next(i.file_size for i in z.infolist() if i.filename.endswith("/data.pkl"))


def safetensors_header_size(data):
    return struct.unpack("<Q", data[:8])[0]


def main():
    binary = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed} (rerun: parser_memory.py {binary} {seed})")
    n = rng.randint(1 * MiB, 3 * MiB)  # input size scale
    makers = {"sample": sample_cases, "recipe": recipe_cases, "jsonl_index": lambda r, k: {
        "one-character rows": "x\n" * (k // 2), "rows and blank lines": "x\n\n \n" * (k // 5)},
        "tiktoken": tiktoken_case, "sentencepiece": sentencepiece_cases, "encode": encode_cases, "safetensors": safetensors_cases,
        "pickle": pickle_cases, "image": image_cases}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for parser, make in makers.items():
            per_byte, constant, header = BOUNDS[parser]
            for name, content in make(rng, n).items():
                pixels = None
                if isinstance(content, tuple):  # (bytes, pixels declared)
                    content, pixels = content
                path = os.path.join(tmp, f"{parser}.input")
                with open(path, "wb") as f:
                    f.write(content.encode() if isinstance(content, str) else content)
                started = time.monotonic()
                run = subprocess.run([binary, parser, path], capture_output=True, text=True)
                seconds = time.monotonic() - started
                if run.returncode not in (0, 3) or not run.stdout.strip():
                    print(f"FAIL {parser} / {name}: exit {run.returncode}: {run.stderr[-300:]}")
                    failures += 1
                    continue
                size, peak = map(int, run.stdout.split())
                # The bound's input: the bytes the header's statement is about.
                if parser == "pickle":
                    size = pickle_size(content)
                elif parser == "safetensors":
                    size = safetensors_header_size(content)
                if pixels is not None:  # the bound of a decoder is per pixel, not per byte of the file
                    per_byte, size = 3.15, pixels
                bound = per_byte * size + constant
                verdict = "ok  " if peak <= bound else "FAIL"
                refused = " (refused)" if run.returncode == 3 else ""
                print(f"{verdict} {parser} / {name}{refused}: {size} bytes -> peak {peak / MiB:.1f} MiB "
                      f"({peak / max(size, 1):.1f}x; bound {per_byte}x + {constant / MiB:.0f} MiB, {header}; {seconds:.1f} s)")
                failures += peak > bound
    print(f"{failures} bound(s) exceeded")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
