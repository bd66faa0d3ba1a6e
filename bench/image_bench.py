"""The reference side of bench/image_bench.sh: PLM's image path in Python on one thread.

Usage:
  image_bench.py gen DIR [N]               write N photo-like JPEGs (half 1920x1080, half 4000x3000, quality 90)
  image_bench.py run DIR [REPEATS] [TILES]  PIL.Image.open(...).convert("RGB") + PLM's thumb+tile transform
                                            (Pillow bicubic, torchvision ToTensor/Normalize, split) per .jpg;
                                            the best pass in process CPU time

The transform is tests/parity/image_parity.py's transcription of core/transforms/image_transform.py.
"""
import os
import sys
import time

import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
from image_parity import reference_thumb_and_tiles, synthetic_photo  # noqa: E402


def gen(d, n):
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        w, h = (1920, 1080) if i % 2 == 0 else (4000, 3000)
        Image.fromarray(synthetic_photo(w, h, i)).save(os.path.join(d, f"photo_{i:02d}_{w}x{h}.jpg"), quality=90)


def run(d, repeats, max_tiles):
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jpg"))
    best, best_decode, chunks = 1e30, 0.0, 0
    for _ in range(repeats):
        decode, chunks = 0.0, 0
        t0 = time.process_time()
        for f in files:
            t1 = time.process_time()
            with Image.open(f) as im:
                rgb = im.convert("RGB")
            decode += time.process_time() - t1
            chunks += reference_thumb_and_tiles(rgb, max_tiles)[0].shape[0]
        total = time.process_time() - t0
        if total < best:
            best, best_decode = total, decode
    print(f"python {len(files)} images {chunks} chunks {best:.4f} s {len(files) / best:.3f} samples/s "
          f"(CPU time; decode {best_decode:.4f} s, resize+tiles {best - best_decode:.4f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) < 3 or sys.argv[1] not in ("gen", "run"):
        sys.exit(__doc__)
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    else:
        run(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3, int(sys.argv[4]) if len(sys.argv) > 4 else 36)
