#!/usr/bin/env python3
"""Draws the training curves of one or more `plm train` runs into one PNG: loss, learning rate and throughput
against the optimizer step, the runs placed one after another (the demo's three stages), each in its own colour.

    scripts/plot_metrics.py --out curves.png demo/stage1 demo/stage2 demo/stage3 [--label "stage 1" ...]

Each run is a dump_dir (its metrics.jsonl is read) or a metrics.jsonl file. Only Pillow is needed (scripts/setup.sh
installs it into .venv), so the plot works where matplotlib is not installed.
"""
import argparse
import json
import math
import os
import sys

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
PANELS = [  # (metrics.jsonl key, title, log scale)
    ("loss/token_mean", "training loss (mean over each step's loss tokens)", True),
    ("optim/lr", "learning rate", False),
    ("speed/samples_per_s", "throughput (samples/s)", False),
]
WIDTH, PANEL_HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 960, 230, 78, 20, 34, 30


def read_run(path):
    """The run's records, ordered by step; a resumed run's repeated steps keep the last record."""
    metrics = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(metrics):
        sys.exit(f"plot_metrics: '{metrics}' does not exist; pass a dump_dir that `plm train` wrote, or its "
                 "metrics.jsonl.")
    by_step = {}
    with open(metrics) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_step[record["global_step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo, hi, n=5):
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def label(v):
    return f"{v:.2g}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5) else f"{v:.3g}"


def draw_panel(d, y0, title, log, runs, offsets, total_steps, key, names):
    x0, x1, y1 = LEFT, WIDTH - RIGHT, y0 + PANEL_HEIGHT - BOTTOM
    top = y0 + TOP
    values = [r[key] for run in runs for r in run if r.get(key) is not None]
    if log:
        values = [v for v in values if v > 0]
    d.text((x0, y0 + 8), title, fill="black", font=font(14))
    d.rectangle([x0, top, x1, y1], outline=(120, 120, 120))
    if not values:
        d.text((x0 + 10, top + 10), "no data", fill="gray", font=font(12))
        return
    lo, hi = min(values), max(values)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    pad = (hi - lo) * 0.05 or 0.5
    lo, hi = lo - pad, hi + pad
    if not log:
        lo = min(lo, 0) if min(values) >= 0 else lo

    def px(step):
        return x0 + (x1 - x0) * step / max(total_steps, 1)

    def py(v):
        v = math.log10(v) if log else v
        return y1 - (y1 - top) * (v - lo) / (hi - lo)

    if log:
        ticks = [10 ** e * m for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                 if lo <= math.log10(10 ** e * m) <= hi]
        if len(ticks) < 3:  # less than a decade: round values in between
            ticks = [t for t in nice_ticks(10 ** lo, 10 ** hi) if t > 0 and lo <= math.log10(t) <= hi]
    else:
        ticks = [t for t in nice_ticks(lo, hi) if lo <= t <= hi]
    for t in ticks:
        y = py(t)
        d.line([x0, y, x1, y], fill=(230, 230, 230))
        d.text((x0 - 6, y), label(t), fill="black", font=font(11), anchor="rm")
    for t in nice_ticks(0, total_steps, 8):
        if t <= total_steps:
            d.text((px(t), y1 + 4), f"{t:g}", fill="black", font=font(11), anchor="ma")
    for i, (run, off) in enumerate(zip(runs, offsets)):
        colour = COLOURS[i % len(COLOURS)]
        if i > 0:
            d.line([px(off), top, px(off), y1], fill=(170, 170, 170), width=1)
        points = [(px(off + r["global_step"]), py(r[key])) for r in run
                  if r.get(key) is not None and (not log or r[key] > 0)]
        if len(points) > 1:
            d.line(points, fill=colour, width=2)
        elif points:
            x, y = points[0]
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    # Legend, top right.
    lx = x1 - 10
    for i in reversed(range(len(runs))):
        text = names[i]
        w = d.textlength(text, font=font(12))
        lx -= w + 26
        d.line([lx, top + 12, lx + 16, top + 12], fill=COLOURS[i % len(COLOURS)], width=3)
        d.text((lx + 20, top + 12), text, fill="black", font=font(12), anchor="lm")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="dump_dir or metrics.jsonl of each run, in training order")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--label", action="append", default=[], help="a name per run (default: stage 1, 2, ...)")
    p.add_argument("--title", default="plm train: the three stages, one after another")
    a = p.parse_args()
    runs = [read_run(r) for r in a.runs]
    names = a.label + [f"stage {i + 1}" for i in range(len(a.label), len(runs))]
    offsets, total = [], 0
    for run in runs:
        offsets.append(total)
        total += run[-1]["global_step"] if run else 0
    img = Image.new("RGB", (WIDTH, 40 + PANEL_HEIGHT * len(PANELS) + 24), "white")
    d = ImageDraw.Draw(img)
    d.text((WIDTH // 2, 12), a.title, fill="black", font=font(16), anchor="ma")
    for i, (key, title, log) in enumerate(PANELS):
        draw_panel(d, 40 + i * PANEL_HEIGHT, title, log, runs, offsets, total, key, names)
    d.text((WIDTH // 2, img.height - 6), "optimizer step (stages placed end to end)", fill="black", font=font(12),
           anchor="md")
    img.save(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
