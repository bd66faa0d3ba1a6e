"""Seed inputs for the binary fuzz harnesses (scripts/fuzz.sh), made by the reference libraries rather than kept as
binary files: safetensors files from the safetensors library, data.pkl pickles from torch.save, small pictures
from Pillow in every format plm decodes, tiny videos in the containers and codecs datasets use from the ffmpeg CLI.
Usage: python tests/fuzz/make_seeds.py OUT_DIR   (writes OUT_DIR/{safetensors,pickle,image,video}/*)"""
import collections
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save

out = sys.argv[1]
for name in ("safetensors", "pickle", "image", "video"):
    os.makedirs(os.path.join(out, name), exist_ok=True)

g = torch.Generator().manual_seed(0)
cases = {
    "one": {"w": torch.randn(2, 3, generator=g)},
    "dtypes": {"a": torch.ones(2, dtype=torch.bfloat16), "b": torch.arange(3, dtype=torch.int64),
               "c": torch.zeros(1, 2, dtype=torch.float16), "d": torch.tensor([True, False])},
    "scalar_and_empty": {"s": torch.tensor(1.5), "e": torch.zeros(0, 4)},
}
for name, tensors in cases.items():
    with open(os.path.join(out, "safetensors", name + ".safetensors"), "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"} if name == "one" else None))

# data.pkl of torch.save archives: the harness supplies storages "0".."3" of 64 bytes, so every seed storage is 16
# float32 elements (torch.save writes a tensor's whole storage).
def storage():
    return torch.arange(16, dtype=torch.float32)


pickles = {
    "flat": collections.OrderedDict(w=storage()[:6].view(2, 3), b=storage()[4:8]),
    "nested": {"model": {"layer": {"w": storage()}}, "step": 3, "name": "x", "lr": [0.1, (1, 2)]},
    "shared": (lambda s: {"a": s, "b": s[2:], "c": s.view(4, 4).t()})(storage()),
    "param": {"p": torch.nn.Parameter(storage())},
}
for name, obj in pickles.items():
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        with open(os.path.join(out, "pickle", name + ".pkl"), "wb") as f:
            f.write(z.read(pkl))

rgb = (np.arange(5 * 7 * 3, dtype=np.uint32).reshape(5, 7, 3) * 37 % 256).astype(np.uint8)
for mode in ("RGB", "L", "RGBA", "P"):
    picture = Image.fromarray(rgb).convert(mode)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
        if fmt == "JPEG" and mode in ("RGBA", "P"):
            continue
        picture.save(os.path.join(out, "image", f"{mode}.{fmt.lower()}"), format=fmt)

# Videos of 32x24 pixels and 6 frames: small enough for the fuzzer's mutations to reach every box and packet. The
# harness reads the first byte as the frame count to ask for, so each file is written after one such byte.
SRC = ["-f", "lavfi", "-i", "testsrc2=size=32x24:rate=6:duration=1"]
videos = {
    "h264.mp4": ["-c:v", "libx264", "-g", "3", "-pix_fmt", "yuv420p"],
    "mpeg4_bframes.mp4": ["-c:v", "mpeg4", "-bf", "2"],
    "h264.mkv": ["-c:v", "libx264", "-pix_fmt", "yuv444p"],
    "h264.ts": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "vp8.webm": ["-c:v", "libvpx"],
    "mjpeg.avi": ["-c:v", "mjpeg"],
    "gif.gif": [],
}
for name, args in videos.items():
    path = os.path.join(out, "video", name)
    try:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *SRC, *args, path], check=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        continue  # no ffmpeg CLI, or one without this encoder: one seed fewer
    with open(path, "rb") as f:
        body = f.read()
    with open(path, "wb") as f:
        f.write(bytes([7]) + body)
