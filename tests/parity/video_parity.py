"""Parity of plm's video path (src/plm/media/{video,frame_sampling,boxes}.*) with the Python reference.

Driven by tests/unit/video_test.cpp:
  video_parity.py make DIR NAME...      encode the named test videos into DIR with the ffmpeg CLI
  video_parity.py sampling FILE N SEED  N random frame-sampling cases with the reference's answers, one per line:
                                        "fps num_frames start end max_frames | i i i" (floats as float.hex(),
                                        start/end "None" when absent, "| error" where the reference raises)
  video_parity.py check FILE            compare what plm wrote into FILE (safetensors; the "cases" metadata entry
                                        says what each tensor is) with torchcodec / torchvision; exit 1 on mismatch

The reference's sampling and transform are transcribed from perception_models core/transforms/video_transform.py
and image_transform.py (ImageTransform._transform_torch_tensor) below; decoding is torchcodec's VideoDecoder.
"""

import json
import random
import subprocess
import sys

import torch
from safetensors.torch import load_file
from safetensors import safe_open
from torchcodec.decoders import VideoDecoder
from torchvision.transforms import functional as F
from torchvision.transforms.functional import InterpolationMode
from torchvision.utils import draw_bounding_boxes

# name -> (ffmpeg input arguments, output arguments, file extension[, arguments of a stream-copy remux after it]);
# the display-matrix rotation can only be set by a remux in FFmpeg 5.1.
SRC = "testsrc2=size=320x240:rate=30"
VIDEOS = {
    "cfr30": (["-f", "lavfi", "-i", SRC + ":duration=4"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "ntsc322": (["-f", "lavfi", "-i", "mandelbrot=size=322x240:rate=30000/1001", "-t", "3"],
                ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "vfr": (["-f", "lavfi", "-i", SRC + ":duration=4"],
            ["-vf", "setpts='if(lt(N,40),N/30,40/30+(N-40)/10)/TB'", "-fps_mode", "vfr",
             "-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "longgop": (["-f", "lavfi", "-i", SRC + ":duration=12"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "shortgop": (["-f", "lavfi", "-i", SRC + ":duration=4"],
                 ["-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p"], "mp4"),
    "hd720": (["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=4"],
              ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], "mp4"),
    "odd444": (["-f", "lavfi", "-i", SRC + ":duration=2"],
               ["-vf", "scale=321:239", "-c:v", "libx264", "-pix_fmt", "yuv444p"], "mp4"),
    "oddmpeg4": (["-f", "lavfi", "-i", SRC + ":duration=2"],
                 ["-vf", "scale=321:239", "-c:v", "mpeg4", "-bf", "2", "-pix_fmt", "yuv420p"], "mp4"),
    "onesec": (["-f", "lavfi", "-i", SRC + ":duration=1"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "mkv": (["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3"],
            ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mkv"),
    "ts": (["-f", "lavfi", "-i", SRC + ":duration=3"], ["-c:v", "libx264", "-g", "15", "-pix_fmt", "yuv420p"], "ts"),
    "fullrange": (["-f", "lavfi", "-i", "mandelbrot=size=352x288:rate=25", "-t", "2"],
                  ["-c:v", "libx264", "-pix_fmt", "yuvj420p", "-colorspace", "bt709"], "mp4"),
    "fullrange330": (["-f", "lavfi", "-i", "mandelbrot=size=330x240:rate=25", "-t", "2"],
                     ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-color_range", "pc", "-colorspace", "bt709"],
                     "mp4"),
    "rotated": (["-f", "lavfi", "-i", "testsrc2=size=320x176:rate=30:duration=2"],
                ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", ["-metadata:s:v:0", "rotate=90"]),
    "rotated180": (["-f", "lavfi", "-i", "testsrc2=size=320x176:rate=30:duration=2"],
                   ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", ["-metadata:s:v:0", "rotate=180"]),
    "audio": (["-f", "lavfi", "-i", "sine=duration=1"], ["-c:a", "aac"], "m4a"),
}


def make(directory, names):
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    for name in names:
        inputs, outputs, ext, *remux = VIDEOS[name]
        target = f"{directory}/{name}.{ext}"
        first = f"{directory}/{name}.pre.{ext}" if remux else target
        subprocess.run([*ffmpeg, *inputs, *outputs, first], check=True)
        if remux:
            subprocess.run([*ffmpeg, "-i", first, "-c", "copy", *remux[0], target], check=True)


# --- the reference, transcribed (video_transform.py load_video / uniform_sample, image_transform.py) ---------


def uniform_sample(m, n):
    assert n <= m
    stride = (m - 1) / (n - 1) if n > 1 else 0  # Calculate the stride
    return [int(round(i * stride)) for i in range(n)]


def sample_positions(fps, total_frames, s, e, max_frames, sampling_fps=1):
    start_frame = 0 if s is None else int(s * fps)
    end_frame = total_frames - 1 if e is None else int(e * fps)
    end_frame = min(end_frame, total_frames - 1)
    if start_frame > end_frame:
        start_frame, end_frame = end_frame, start_frame
    elif start_frame == end_frame:
        end_frame = start_frame + 1
    sample_fps = int(sampling_fps)
    t_stride = int(round(float(fps) / sample_fps))
    all_pos = list(range(start_frame, end_frame + 1, t_stride))
    if len(all_pos) > max_frames:
        sample_idxs = uniform_sample(len(all_pos), max_frames)
        sample_pos = [all_pos[i] for i in sample_idxs]
    elif len(all_pos) < max_frames:
        total_clip_frames = end_frame - start_frame + 1
        if total_clip_frames < max_frames:
            max_frames = total_clip_frames
        sample_idxs = uniform_sample(total_clip_frames, max_frames)
        sample_pos = [start_frame + idx for idx in sample_idxs]
    else:
        sample_pos = all_pos
    return sample_pos


def load_video(path, max_frames, s, e):
    decoder = VideoDecoder(path, device="cpu")
    md = decoder.metadata
    pos = sample_positions(md.average_fps, md.num_frames, s, e, max_frames)
    return decoder.get_frames_at(indices=pos).data, pos


def draw_boxes(frames, sample_pos, bbox_map):
    # video_transform.py: a sampled frame gets the box of bbox_map[str(pos)] when that is present and not None.
    bbox_dict_map = {i: bbox_map[str(p)] for i, p in enumerate(sample_pos) if bbox_map.get(str(p)) is not None}
    frames = frames.clone()
    for i in range(frames.shape[0]):
        if i in bbox_dict_map:
            box = torch.tensor([bbox_dict_map[i]], dtype=torch.float32)
            frames[i] = draw_bounding_boxes(frames[i], boxes=box, colors=(255, 0, 0), width=4)
    return frames


def transform_torch_tensor(image, size):
    image = F.resize(image, size=(size, size), interpolation=InterpolationMode.BICUBIC)
    image = image.to(torch.float32) / 255.0
    return F.normalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), inplace=True)


# --- sampling cases -----------------------------------------------------------------------------------------


def sampling(out_path, n, seed):
    rng = random.Random(seed)
    fps_choices = [30.0, 29.97002997002997, 23.976023976023978, 59.94005994005994, 25.0, 24.0, 60.0, 1.0, 0.5,
                   0.4, 2.5, 1.5, 120.0, 12.949640287769784, 15.0]
    with open(out_path, "w") as out:
        for _ in range(n):
            fps = rng.choice(fps_choices) if rng.random() < 0.8 else rng.uniform(0.3, 240.0)
            num_frames = rng.choice([1, 2, 3, 5, 20, 31, 32, 33, 64, 300, 1800, 54000]) if rng.random() < 0.5 \
                else rng.randint(1, 20000)
            duration = num_frames / fps
            s = None if rng.random() < 0.3 else rng.choice([0.0, rng.uniform(0, duration), rng.uniform(-2, duration + 5),
                                                            float(rng.randint(0, int(duration) + 1))])
            e = None if rng.random() < 0.3 else rng.choice([rng.uniform(0, duration + 10), s if s is not None else 1.0,
                                                            float(rng.randint(0, int(duration) + 2))])
            m = rng.choice([1, 2, 4, 8, 16, 32, 32, 32, 64]) if rng.random() < 0.9 else rng.randint(0, 100)
            try:
                answer = " ".join(map(str, sample_positions(fps, num_frames, s, e, m)))
            except (ValueError, AssertionError):
                answer = "error"
            hexf = lambda v: "None" if v is None else float(v).hex()  # noqa: E731
            out.write(f"{hexf(fps)} {num_frames} {hexf(s)} {hexf(e)} {m} | {answer}\n")


# --- comparisons --------------------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.failures = []

    def equal(self, name, ours, ref, tolerance=0):
        if ours.shape != ref.shape or ours.dtype != ref.dtype:
            self.failures.append(f"{name}: shape/dtype {tuple(ours.shape)} {ours.dtype} vs {tuple(ref.shape)} {ref.dtype}")
            print(f"FAIL {name}: shape/dtype differ")
            return
        diff = (ours.double() - ref.double()).abs()
        worst, count = diff.max().item() if diff.numel() else 0.0, int((diff > 0).sum())
        ok = worst <= tolerance
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {worst:g}, {count} of {diff.numel()} values differ")
        if not ok:
            self.failures.append(f"{name}: max |diff| {worst:g}")

    def same(self, name, ours, ref):
        ok = ours == ref
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {ours if ok else f'{ours} vs reference {ref}'}")
        if not ok:
            self.failures.append(f"{name}: {ours} vs {ref}")


def check(path):
    with safe_open(path, "pt") as f:
        cases = json.loads(f.metadata()["cases"])
    ours = load_file(path)
    report = Report()
    for case in cases:
        name, kind = case["name"], case["kind"]
        if kind == "frames":
            decoder = VideoDecoder(case["video"], device="cpu")
            md = decoder.metadata
            report.same(f"{name} info", ours[f"{name}/info"].tolist(),
                        [md.average_fps, float(md.num_frames), float(md.width), float(md.height)])
            ref = decoder.get_frames_at(case["indices"]).data
            report.equal(f"{name} frames", ours[f"{name}/frames"], ref)
        elif kind == "clip":
            frames, pos = load_video(case["video"], case["max_frames"], case.get("start"), case.get("end"))
            report.same(f"{name} indices", ours[f"{name}/indices"].tolist(), pos)
            if case.get("bbox_map"):
                frames = draw_boxes(frames, pos, case["bbox_map"])
            report.equal(f"{name} frames", ours[f"{name}/frames"], frames)
            if f"{name}/pixels" in ours:
                report.equal(f"{name} pixels", ours[f"{name}/pixels"], transform_torch_tensor(frames, case["size"]))
        elif kind == "box":
            before = ours[f"{name}/before"]
            box = torch.tensor([case["box"]], dtype=torch.float32)
            try:
                ref = draw_bounding_boxes(before, boxes=box, colors=(255, 0, 0), width=4)
            except ValueError:
                ref = None
            if case["refused"] or ref is None:
                report.same(f"{name} refused", case["refused"], ref is None)
            else:
                report.equal(f"{name} drawn", ours[f"{name}/after"], ref)
        elif kind == "resize":
            x = ours[f"{name}/input"]
            ref = F.resize(x, [case["size"], case["size"]], interpolation=InterpolationMode.BICUBIC, antialias=True)
            report.equal(f"{name} resized", ours[f"{name}/output"], ref)
        else:
            raise ValueError(f"unknown case kind {kind}")
    if report.failures:
        print(f"{len(report.failures)} mismatches:\n  " + "\n  ".join(report.failures))
        return 1
    print(f"all {len(cases)} cases match")
    return 0


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "make":
        make(sys.argv[2], sys.argv[3:])
    elif command == "sampling":
        sampling(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif command == "check":
        sys.exit(check(sys.argv[2]))
    else:
        sys.exit(f"unknown command {command}")
