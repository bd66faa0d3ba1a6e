"""Image parity for tests/unit/image_test.cpp: plm's decoding, resizing, tiling and grid choice against Pillow,
torchvision and a transcription of PLM's core/transforms/image_transform.py.

Usage:
  image_parity.py make DIR    write fixture images into DIR and DIR/manifest.txt, one job per line:
                                decode NAME strict|besteffort      load_image_rgb(DIR/NAME)
                                resize NAME W H                    resize_bicubic_pil(decoded NAME, W, H)
                                tiles NAME MAX_TILES SIZE          thumb_and_tiles(decoded NAME, ...)
                                vanilla NAME SIZE                  vanilla(decoded NAME, SIZE)
                                grid W H MAX_TILES                 choose_tile_grid(W, H, MAX_TILES)
                                normalize                          normalize_to_float(arange(256) as uint8)
  image_parity.py samples DIR  write sample.jpg and sample.png (64x48) into DIR
  image_parity.py photo DIR    write photo.jpg (4000x3000) into DIR
  image_parity.py check DIR   compare DIR/ours.safetensors (written by the C++ test: tensors named
                              "<job>:<args joined by :>", failures as metadata "<job>:<args>" -> "reason: message",
                              grids as one int64 tensor "grids" [N, 2] in manifest order) with the references;
                              print one line per case and exit 1 if a strict case differs.
The photo generator and the reference transform are also used by bench/image_bench.py.
"""
import math
import os
import random
import struct
import sys
import zlib
from functools import reduce

import numpy as np
import torch
import torchvision.transforms as tv
import torchvision.transforms.functional as F
from PIL import Image
from safetensors import safe_open

SIZE = 448


# ---------------------------------------------------------------------------------------------------------------
# Synthetic content

def synthetic_photo(w, h, seed):
    """A photo-like RGB image: smooth gradients and waves, blotches, edges and sensor-like noise (uint8 HWC)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(x / (37 + seed) + y / 91), 127 + 100 * np.cos(y / 53 - x / (71 + seed)),
                    127 + 90 * np.sin((x + y) / 29)], -1)
    blotch = r.normal(0, 14, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    img += blotch + r.normal(0, 6, (h, w, 3))
    img[(x.astype(int) // 97 + y.astype(int) // 83) % 5 == 0] *= 0.5  # hard edges
    return np.clip(img, 0, 255).astype(np.uint8)


def noise(w, h, channels, seed, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, (h, w, channels) if channels else (h, w), dtype=dtype)


def png_bytes(samples, color_type, depth, palette=None, trns=None, interlace=False):
    """A PNG written by hand (Pillow cannot write 16-bit colour, 2-bit grey or Adam7). samples: [h, w, c] ints."""
    h, w = samples.shape[:2]
    samples = samples.reshape(h, w, -1)

    def rows(img):
        out = b""
        for row in img:
            flat = row.reshape(-1)
            if depth == 16:
                data = flat.astype(">u2").tobytes()
            elif depth == 8:
                data = flat.astype(np.uint8).tobytes()
            else:
                data = np.packbits(np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)[:, 8 - depth:]).tobytes()
            out += b"\0" + data
        return out

    if interlace:
        raw = b"".join(rows(samples[y0::dy, x0::dx]) for x0, y0, dx, dy in
                       [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                        (0, 1, 1, 2)] if samples[y0::dy, x0::dx].size)
    else:
        raw = rows(samples)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace))
    if palette is not None:
        out += chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_fixtures(d):
    jobs = []
    rgb = Image.fromarray(synthetic_photo(333, 217, 3))  # odd sizes exercise chroma upsampling edges
    rgba = Image.fromarray(np.dstack([synthetic_photo(120, 75, 4), noise(120, 75, 0, 5)]))

    def put(name, data, kind="strict"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        jobs.append(f"decode {name} {kind}")

    def put_image(name, img, kind="strict", **kw):
        img.save(os.path.join(d, name), **kw)
        jobs.append(f"decode {name} {kind}")

    # PNG, through Pillow's writer and by hand
    put_image("png_rgb8.png", rgb)
    put_image("png_rgba8.png", rgba)
    put_image("png_grey8.png", rgb.convert("L"))
    put_image("png_la8.png", rgba.convert("LA"))
    put_image("png_palette8.png", rgb.quantize(256))
    put_image("png_palette4.png", rgb.quantize(16), bits=4)
    pal = rgb.quantize(200)
    put_image("png_palette_trns.png", pal, transparency=bytes(range(0, 200)))
    put_image("png_palette_trns1.png", pal, transparency=7)
    put_image("png_grey1.png", rgb.convert("1"))
    put_image("png_grey16_pillow.png", Image.fromarray((synthetic_photo(90, 60, 6)[..., 0].astype(np.uint16) * 3)))
    put("png_grey16.png", png_bytes(noise(70, 50, 0, 7, np.uint16, 65536) >> np.uint16(7), 0, 16))
    put("png_grey16_low.png", png_bytes(noise(70, 50, 0, 8, np.uint16, 300), 0, 16))
    put("png_grey2.png", png_bytes(noise(33, 21, 0, 9, high=4), 0, 2))
    put("png_grey4.png", png_bytes(noise(33, 21, 0, 10, high=16), 0, 4))
    put("png_la16.png", png_bytes(noise(41, 23, 2, 11, np.uint16, 65536), 4, 16))
    put("png_rgb16.png", png_bytes(noise(41, 23, 3, 12, np.uint16, 65536), 2, 16))
    put("png_rgba16.png", png_bytes(noise(41, 23, 4, 13, np.uint16, 65536), 6, 16))
    put("png_grey_trns.png", png_bytes(noise(41, 23, 0, 14), 0, 8, trns=b"\0\x10"))
    put("png_rgb_trns.png", png_bytes(noise(41, 23, 3, 15), 2, 8, trns=b"\0\x10\0\x20\0\x30"))
    put("png_interlaced.png", png_bytes(synthetic_photo(37, 29, 16), 2, 8, interlace=True))
    put("png_interlaced16.png", png_bytes(noise(13, 11, 4, 17, np.uint16, 65536), 6, 16, interlace=True))
    put("png_palette2_short.png", png_bytes(noise(19, 7, 0, 18, high=4), 3, 2, palette=[9, 200, 30, 250, 0, 77]))
    put("png_1x1.png", png_bytes(np.array([[[1, 2, 3]]]), 2, 8))
    # JPEG: subsamplings, progressive, greyscale, CMYK (Adobe, inverted), YCCK, RGB-coded, EXIF orientation
    put_image("jpg_420.jpg", rgb, quality=90, subsampling="4:2:0")
    put_image("jpg_422.jpg", rgb, quality=90, subsampling="4:2:2")
    put_image("jpg_444.jpg", rgb, quality=95, subsampling="4:4:4")
    put_image("jpg_progressive.jpg", rgb, quality=85, progressive=True)
    put_image("jpg_optimized_restart.jpg", rgb, quality=80, optimize=True, restart_marker_blocks=3)
    put_image("jpg_grey.jpg", rgb.convert("L"), quality=90)
    put_image("jpg_cmyk.jpg", rgb.convert("CMYK"), quality=90)
    cmyk = open(os.path.join(d, "jpg_cmyk.jpg"), "rb").read()
    adobe = cmyk.index(b"Adobe")
    put("jpg_ycck.jpg", cmyk[:adobe + 11] + b"\x02" + cmyk[adobe + 12:])  # transform flag 2: YCCK
    put_image("jpg_rgb_coded.jpg", rgb, quality=90, keep_rgb=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    put_image("jpg_exif_rotated.jpg", rgb, quality=90, exif=exif)
    put_image("jpg_1x1.jpg", Image.new("RGB", (1, 1), (200, 10, 60)))
    put_image("jpg_tiny_odd.jpg", rgb.resize((5, 3)), quality=70)
    # Truncations: Pillow decides whether each one is an error (image file is truncated) or still decodes.
    jpg = open(os.path.join(d, "jpg_420.jpg"), "rb").read()
    png = open(os.path.join(d, "png_rgb8.png"), "rb").read()
    for cut in (len(jpg) // 2, len(jpg) - 100, len(jpg) - 2, len(jpg) - 1):
        put(f"cut_jpg_{cut}.jpg", jpg[:cut])
    prog = open(os.path.join(d, "jpg_progressive.jpg"), "rb").read()
    put("cut_progressive.jpg", prog[:len(prog) * 2 // 3])
    for cut in (len(png) // 2, len(png) - 12, len(png) - 20):
        put(f"cut_png_{cut}.png", png[:cut])
    # WebP
    put_image("webp_lossy.webp", rgb, quality=80)
    put_image("webp_lossless.webp", rgb, lossless=True)
    put_image("webp_lossy_alpha.webp", rgba, quality=80)
    put_image("webp_lossless_alpha.webp", rgba, lossless=True)
    put_image("webp_animated.webp", rgb, save_all=True, append_images=[rgb.rotate(90)], duration=100)
    # Formats plm hands to FFmpeg (best effort)
    put_image("other.gif", rgb, kind="besteffort")
    put_image("other.bmp", rgb, kind="besteffort")
    put_image("other.tiff", rgb, kind="besteffort")
    put_image("other.ppm", rgb, kind="besteffort")
    # Resizing (lossless sources, so only the resize is compared)
    sources = {"r97x61.png": (97, 61), "r1x1.png": (1, 1), "r3x1000.png": (3, 1000), "r10000x1.png": (10000, 1),
               "r640x427.png": (640, 427), "r1920x1147.png": (1920, 1147)}
    for i, (name, (w, h)) in enumerate(sources.items()):
        Image.fromarray(synthetic_photo(w, h, 20 + i) if w * h > 64 else noise(w, h, 3, i)).save(
            os.path.join(d, name))
    for name, w, h in [("r97x61.png", 31, 17), ("r97x61.png", 448, 448), ("r97x61.png", 1000, 37),
                       ("r97x61.png", 97, 61), ("r97x61.png", 50, 61), ("r97x61.png", 97, 30), ("r97x61.png", 1, 1),
                       ("r1x1.png", 5, 3), ("r3x1000.png", 448, 448), ("r10000x1.png", 448, 448),
                       ("r10000x1.png", 7, 2), ("r640x427.png", 448, 448), ("r640x427.png", 896, 896),
                       ("r640x427.png", 641, 426), ("r1920x1147.png", 448, 448), ("r1920x1147.png", 3136, 2240),
                       ("r1920x1147.png", 333, 1999)]:
        jobs.append(f"resize {name} {w} {h}")
    # Random sizes, half of them at or next to Pillow 13's pass-order boundary (H - h == 2 * (W - w)).
    rnd = random.Random(99)
    for i in range(40):
        name = rnd.choice(["r97x61.png", "r640x427.png", "r3x1000.png"])
        w_in, h_in = sources[name]
        w = rnd.randint(1, 2 * w_in + 50)
        h = h_in - 2 * (w_in - w) + rnd.choice([-1, 0, 1]) if i % 2 else rnd.randint(1, 2 * h_in)
        if h >= 1:
            jobs.append(f"resize {name} {w} {h}")
    # Transforms
    for name, (w, h) in {"t640x427.jpg": (640, 427), "t480x640.png": (480, 640), "t300x800.jpg": (300, 800),
                         "t100x100.png": (100, 100), "t1280x427.jpg": (1280, 427), "t4000x3000.jpg": (4000, 3000),
                         "t5000x500.png": (5000, 500)}.items():
        Image.fromarray(synthetic_photo(w, h, w % 97)).save(os.path.join(d, name), quality=90)
    for name, tiles in [("t640x427.jpg", 4), ("t480x640.png", 36), ("t300x800.jpg", 16), ("t100x100.png", 36),
                        ("t1280x427.jpg", 4), ("t4000x3000.jpg", 36), ("t5000x500.png", 36), ("r3x1000.png", 9),
                        ("r10000x1.png", 36)]:
        jobs.append(f"tiles {name} {tiles} {SIZE}")
    jobs += [f"vanilla t640x427.jpg {SIZE}", "vanilla r97x61.png 336", "normalize"]
    # Tile grids: the worked examples, edge sizes around multiples of 448, and random sizes
    rnd = random.Random(1234)
    cases = [(640, 427, 4), (480, 640, 36), (300, 800, 16), (448, 448, 36), (100, 100, 36), (1920, 1147, 36),
             (1920, 1147, 16), (4000, 3000, 36), (4000, 3000, 16), (1280, 427, 4), (5000, 500, 36),
             (2000, 1000, 9), (3000, 1000, 9), (1, 10000, 36), (10000, 1, 36), (1, 1, 1)]
    for _ in range(600):
        k = rnd.randint(1, 8) * SIZE + rnd.choice([-1, 0, 1])
        cases.append((k, rnd.choice([k, rnd.randint(1, 4000)]), rnd.randint(1, 40)))
    for _ in range(2400):
        w, h = (int(math.exp(rnd.uniform(0, math.log(20000)))) for _ in range(2))
        cases.append((max(w, 1), max(h, 1), rnd.choice([1, 2, 4, 6, 9, 12, 16, 24, 36, rnd.randint(1, 64)])))
    jobs += [f"grid {w} {h} {m}" for w, h, m in cases]
    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write("\n".join(jobs) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# References: Pillow + torchvision, and PLM's grid selection transcribed from core/transforms/image_transform.py

def supported_aspect_ratios(max_num_tiles):
    asp_dict = {}
    for chunk_size in range(max_num_tiles, 0, -1):
        factors = sorted(set(reduce(list.__add__, ([i, chunk_size // i] for i in range(1, int(chunk_size ** 0.5) + 1)
                                                   if chunk_size % i == 0))))
        for ratio in [(x, chunk_size // x) for x in factors]:
            k = ratio[0] / ratio[1]
            asp_dict.setdefault(k, []).append(ratio)
    return asp_dict


def closest_aspect_ratio(w, h, max_num_tiles, size=SIZE):
    tgt_ar = w / h
    asp_dict = supported_aspect_ratios(max_num_tiles)
    if tgt_ar >= 1:
        cl_p = min([k for k in asp_dict.keys() if k <= tgt_ar], key=lambda x: abs(x - tgt_ar))
        v = asp_dict[cl_p]
        idx = max([(i, size * vv[0]) for i, vv in enumerate(v)], key=lambda x: x[1])[0]
    else:
        cl_p = min([k for k in asp_dict.keys() if k > tgt_ar], key=lambda x: abs(1 / x - 1 / tgt_ar))
        v = asp_dict[cl_p]
        idx = max([(i, size * vv[1]) for i, vv in enumerate(v)], key=lambda x: x[1])[0]
    return v[idx]


def image_height_width(image_width, image_height, target_width, target_height):
    scale = image_width / image_height
    rescaling_factor = min(target_width / image_width, target_height / image_height)
    if scale > 1.0:
        new_w = rescaling_factor * image_width
        new_h = math.floor(new_w / scale)
    else:
        new_h = rescaling_factor * image_height
        new_w = math.floor(new_h * scale)
    return new_w, new_h


def fit_image_to_canvas(w, h, max_num_tiles, size=SIZE):
    optimal_canvas, optimal_wh = None, None
    scale = w / h
    for n_w, n_h in [g for gs in supported_aspect_ratios(max_num_tiles).values() for g in gs]:
        if n_w * size >= w and n_h * size >= h:
            wh = image_height_width(w, h, n_w * size, n_h * size)
            if optimal_canvas is None or (scale < 1.0 and wh[0] >= optimal_wh[0]) or (
                    scale >= 1.0 and wh[1] >= optimal_wh[1]):
                optimal_canvas, optimal_wh = (n_w, n_h), wh
    return optimal_canvas


def tile_grid(w, h, max_num_tiles, size=SIZE):
    return fit_image_to_canvas(w, h, max_num_tiles, size) or closest_aspect_ratio(w, h, max_num_tiles, size)


TO_TENSOR = tv.Compose([tv.ToTensor(), tv.Normalize(mean=(0.5,) * 3, std=(0.5,) * 3, inplace=True)])


def reference_vanilla(image, size=SIZE):
    return TO_TENSOR(F.resize(image, (size, size), interpolation=tv.InterpolationMode.BICUBIC)).view(1, 3, size, size)


def reference_thumb_and_tiles(image, max_num_tiles, size=SIZE):
    """PLM's VariableSizeImageTransform(use_thumbnail="before") step by step (its padding is a no-op)."""
    thumbnail = reference_vanilla(image, size)
    n_w, n_h = tile_grid(*image.size, max_num_tiles, size)
    canvas = TO_TENSOR(F.resize(image, (n_h * size, n_w * size), interpolation=tv.InterpolationMode.BICUBIC))
    tiles = canvas.view(3, n_h, size, n_w, size).permute(1, 3, 0, 2, 4).contiguous().view(n_w * n_h, 3, size, size)
    return torch.cat((thumbnail, tiles), dim=0), (n_w, n_h)


# ---------------------------------------------------------------------------------------------------------------
# Comparison

def pillow_rgb(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), None
    except Exception as e:  # noqa: BLE001 - any Pillow failure means "the reference cannot read it"
        return None, f"{type(e).__name__}: {e}"


def describe(diff):
    hist = np.bincount(np.minimum(diff.reshape(-1), 3), minlength=4)
    return f"max |diff| {int(diff.max()) if diff.size else 0}, histogram 0/1/2/3+: {hist.tolist()}"


def check(d):
    with safe_open(os.path.join(d, "ours.safetensors"), "pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}
        failures = f.metadata() or {}
    jobs = [line.split() for line in open(os.path.join(d, "manifest.txt")) if line.strip()]
    bad = 0
    grid_cases = [tuple(map(int, j[1:])) for j in jobs if j[0] == "grid"]
    for job in jobs:
        kind, args = job[0], job[1:]
        key = ":".join([kind] + args)
        if kind == "decode":
            name, strict = args[0], args[1] == "strict"
            ref, ref_error = pillow_rgb(os.path.join(d, name))
            if ref is None:
                ok = key in failures and failures[key].startswith("decode_error")
                print(f"{'ok ' if ok else 'BAD'} {name}: Pillow fails ({ref_error}); plm: {failures.get(key, 'decoded')}")
            elif key not in ours:
                ok = not strict
                print(f"{'ok ' if ok else 'BAD'} {name}: Pillow decodes it; plm fails: {failures.get(key)}")
            else:
                mine = ours[key].numpy()
                ok = mine.shape == ref.shape
                diff = np.abs(mine.astype(int) - ref.astype(int)) if ok else np.zeros(0, int)
                ok = ok and (not strict or diff.max(initial=0) == 0)
                print(f"{'ok ' if ok else 'BAD'} {name} {'' if strict else '(best effort) '}{mine.shape}: "
                      + (describe(diff) if diff.size else f"shape {mine.shape} vs Pillow {ref.shape}"))
        elif kind == "resize":
            with Image.open(os.path.join(d, args[0])) as im:
                ref = np.asarray(im.convert("RGB").resize((int(args[1]), int(args[2])), Image.BICUBIC))
            mine = ours[key].numpy()
            ok = mine.shape == ref.shape and np.array_equal(mine, ref)
            diff = np.abs(mine.astype(int) - ref.astype(int)) if mine.shape == ref.shape else np.full(1, 255)
            print(f"{'ok ' if ok else 'BAD'} resize {args[0]} -> {args[1]}x{args[2]}: {describe(diff)}")
        elif kind in ("tiles", "vanilla"):
            with Image.open(os.path.join(d, args[0])) as im:
                image = im.convert("RGB")
            if kind == "tiles":
                ref, grid = reference_thumb_and_tiles(image, int(args[1]), int(args[2]))
                ok_grid = tuple(ours["grid:" + ":".join(args)].tolist()) == grid
            else:
                ref, grid, ok_grid = reference_vanilla(image, int(args[1])), (1, 1), True
            mine = ours[key]
            same_shape = mine.shape == ref.shape
            levels = ((mine - ref).abs() * 127.5).round().to(torch.int64).numpy() if same_shape else np.full(1, 255)
            ok = ok_grid and same_shape and levels.max() <= 1
            exact = same_shape and torch.equal(mine, ref)
            print(f"{'ok ' if ok else 'BAD'} {kind} {' '.join(args)}: grid {grid}, shape {tuple(mine.shape)}, "
                  f"bit-equal floats: {exact}, uint8 levels {describe(levels)}")
        elif kind == "normalize":
            ref = TO_TENSOR(Image.fromarray(np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, 2)))[0, 0]
            ok = torch.equal(ours["normalize"], ref)
            print(f"{'ok ' if ok else 'BAD'} normalize_to_float vs ToTensor+Normalize, all 256 values bit-equal: {ok}")
        else:
            continue
        bad += not ok
    got = ours["grids"].tolist()
    wrong = [(c, tuple(g), tile_grid(*c)) for c, g in zip(grid_cases, got) if tuple(g) != tile_grid(*c)]
    for c, g, r in wrong[:20]:
        print(f"BAD grid {c}: plm {g}, reference {r}")
    print(f"{'ok ' if not wrong and len(got) == len(grid_cases) else 'BAD'} tile grids: "
          f"{len(grid_cases) - len(wrong)}/{len(grid_cases)} equal to the reference transcription")
    bad += bool(wrong) or len(got) != len(grid_cases)
    print(f"{bad} failing case(s)")
    return 1 if bad else 0


def make_samples(d):
    small = Image.fromarray(synthetic_photo(64, 48, 1))
    small.save(os.path.join(d, "sample.jpg"), quality=90)
    small.save(os.path.join(d, "sample.png"))


def make_photo(d):
    Image.fromarray(synthetic_photo(4000, 3000, 2)).save(os.path.join(d, "photo.jpg"), quality=90)


if __name__ == "__main__":
    torch.set_num_threads(1)
    commands = {"make": make_fixtures, "samples": make_samples, "photo": make_photo, "check": check}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    sys.exit(commands[sys.argv[1]](sys.argv[2]))
