"""Fixtures and checks for tests/unit/ckpt_format_test.cpp, made with the Python references (torch, safetensors).

Tensor values follow one formula that the C++ test repeats (`pattern` there), so both sides agree bit for bit:
floats are sin(1.7 * i + seed) * 1000, integers (7919 * i + 31 * seed - 5000) wrapped to the dtype, bools
(7919 * i + seed) % 3 == 0, all computed in float64 / int64 and then converted by torch.

Usage:
  ckpt_fixtures.py make DIR           write the Python-made fixture files into DIR
  ckpt_fixtures.py check_pth FILE     torch.load(FILE, weights_only=True) must equal what the C++ test saved
  ckpt_fixtures.py check_st FILE      safetensors.torch.load_file(FILE) must equal what the C++ test wrote
"""
import collections
import os
import sys
import zipfile

import torch
from safetensors.torch import save_file, load_file

DTYPES = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
          "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "u8": torch.uint8,
          "bool": torch.bool}


def pattern(dtype, shape, seed):
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    if dtype.is_floating_point:
        t = torch.sin(i.to(torch.float64) * 1.7 + seed) * 1000
    elif dtype == torch.bool:
        t = (i * 7919 + seed) % 3 == 0
    else:
        t = i * 7919 + 31 * seed - 5000
    return t.to(dtype).reshape(shape)


def all_dtypes():
    """One [2, 3, 4] tensor per dtype named after it, plus a scalar and an empty tensor (as in the C++ test)."""
    sd = collections.OrderedDict()
    for k, (name, dtype) in enumerate(DTYPES.items()):
        sd[name] = pattern(dtype, [2, 3, 4], k)
    sd["scalar"] = pattern(torch.float32, [], 11)
    sd["empty"] = pattern(torch.float32, [0, 5], 12)
    return sd


def views_state_dict():
    """A module state dict with a tied weight saved twice, a slice, a transpose, bf16 and a Parameter."""
    sd = torch.nn.Linear(4, 3).state_dict()  # OrderedDict with _metadata
    sd["weight"] = pattern(torch.float32, [3, 4], 1)
    sd["bias"] = pattern(torch.float32, [3], 2)
    emb = pattern(torch.float32, [6, 4], 3)
    sd["tok_embeddings.weight"] = emb
    sd["output.weight"] = emb  # tied: the same tensor twice
    sd["slice"] = emb[2:5, 1:3]  # a view at an offset with strides (4, 1)
    sd["transposed"] = emb.t()
    sd["bf16"] = pattern(torch.bfloat16, [5], 4)
    sd["param"] = torch.nn.Parameter(pattern(torch.float32, [2], 5))
    return sd


def make(out):
    os.makedirs(out, exist_ok=True)
    save_file(all_dtypes(), f"{out}/all.safetensors", metadata={"format": "pt", "note": "made by python"})
    torch.save(all_dtypes(), f"{out}/all.pth")
    sd = views_state_dict()
    torch.save(sd, f"{out}/views.pth")
    torch.save(sd, f"{out}/views_proto4.pth", pickle_protocol=4)
    torch.save({"model": sd, "step": 3, "args": {"lr": 0.1}}, f"{out}/model_wrap.pth")
    torch.save({"state_dict": sd, "epoch": 1, "name": "pe"}, f"{out}/state_dict_wrap.pth")
    torch.save({"model": {"a": pattern(torch.float32, [2], 6)},
                "optim": {"state": {0: {"step": pattern(torch.float32, [], 7)}}, "lr": [0.1]},
                "lst": [pattern(torch.float32, [1], 8)], "n": 5},
               f"{out}/nested.pth")
    cycle = {"w": pattern(torch.float32, [1], 9)}
    cycle["self"] = cycle
    torch.save(cycle, f"{out}/cycle.pth")
    torch.save(sd, f"{out}/legacy.pth", _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(f"{out}/all.pth") as src, zipfile.ZipFile(f"{out}/compressed.pth", "w") as dst:
        for name in src.namelist():  # the same records, deflated (torch.save stores them uncompressed)
            dst.writestr(name.replace("all/", "compressed/"), src.read(name), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(f"{out}/bad_opcode.pth", "w") as z:  # INT ('I', protocol 0) is not emitted by torch.save
        z.writestr("bad_opcode/data.pkl", b"\x80\x02I5\n.")
        z.writestr("bad_opcode/byteorder", "little")
        z.writestr("bad_opcode/version", "3\n")


def expect_equal(got, want, what):
    if list(got.keys()) != list(want.keys()):
        sys.exit(f"{what}: keys {list(got.keys())} != {list(want.keys())}")
    for k in want:
        g, w = got[k], want[k]
        if g.dtype != w.dtype or g.shape != w.shape or not torch.equal(g, w):
            sys.exit(f"{what}: tensor {k} differs: {g.dtype} {tuple(g.shape)} vs {w.dtype} {tuple(w.shape)}")


def check_pth(path):
    got = torch.load(path, weights_only=True)
    if type(got) is not collections.OrderedDict:
        sys.exit(f"{path}: loaded a {type(got).__name__}, not an OrderedDict")
    want = all_dtypes()
    emb = pattern(torch.float32, [6, 4], 3)
    want.update({"tied_a": emb, "tied_b": emb, "slice": emb[2:5, 1:3], "transposed": emb.t()})
    expect_equal(got, want, path)
    if got["tied_a"].untyped_storage().data_ptr() != got["slice"].untyped_storage().data_ptr():
        sys.exit(f"{path}: tied_a and slice do not share a storage")


def check_st(path):
    expect_equal(load_file(path), all_dtypes(), path)


if __name__ == "__main__":
    {"make": make, "check_pth": check_pth, "check_st": check_st}[sys.argv[1]](sys.argv[2])
