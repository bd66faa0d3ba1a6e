"""The Python reference of bench/video_bench.cpp: perception_models' VideoTransform on whole files (torchcodec
VideoDecoder with its defaults, 1-fps sampling of up to 32 frames, get_frames_at, torchvision F.resize to 448x448
bicubic antialiased, /255, Normalize(0.5, 0.5)), one core: torch.set_num_threads(1) and torchcodec's default
num_ffmpeg_threads=1. Usage: video_bench.py [--repeats R] VIDEO..."""

import sys
import time

import torch
from torchcodec.decoders import VideoDecoder
from torchvision.transforms import functional as F
from torchvision.transforms.functional import InterpolationMode


def uniform_sample(m, n):
    stride = (m - 1) / (n - 1) if n > 1 else 0
    return [int(round(i * stride)) for i in range(n)]


def load_video(path, max_frames=32):  # video_transform.py load_video with s = e = None
    decoder = VideoDecoder(path, device="cpu")
    fps, total = decoder.metadata.average_fps, decoder.metadata.num_frames
    start, end = 0, total - 1
    all_pos = list(range(start, end + 1, int(round(float(fps)))))
    if len(all_pos) > max_frames:
        pos = [all_pos[i] for i in uniform_sample(len(all_pos), max_frames)]
    elif len(all_pos) < max_frames:
        n = min(max_frames, end - start + 1)
        pos = [start + i for i in uniform_sample(end - start + 1, n)]
    else:
        pos = all_pos
    return decoder.get_frames_at(indices=pos).data


def transform(frames, size=448):  # image_transform.py _transform_torch_tensor
    image = F.resize(frames, size=(size, size), interpolation=InterpolationMode.BICUBIC)
    image = image.to(torch.float32) / 255.0
    return F.normalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), inplace=True)


def main(argv):
    repeats = 1
    if argv[:1] == ["--repeats"]:
        repeats, argv = int(argv[1]), argv[2:]
    torch.set_num_threads(1)
    decode_s = resize_s = checksum = 0.0
    samples = 0
    cpu0 = time.process_time()
    for r in range(repeats):
        for path in argv:
            t0 = time.perf_counter()
            frames = load_video(path)
            t1 = time.perf_counter()
            pixels = transform(frames)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            resize_s += t2 - t1
            if r == 0:
                checksum += pixels.sum(dtype=torch.float64).item()
            samples += 1
    total = decode_s + resize_s
    cpu_s = time.process_time() - cpu0
    print(f"python   threads=1 cores=1 samples {samples} time {total:.2f} s (decode {decode_s:.2f}, resize+normalise "
          f"{resize_s:.2f}) samples/s {samples / total:.3f} samples/s/core {samples / total:.3f} cpu {cpu_s:.2f} s "
          f"samples/cpu-s {samples / cpu_s:.3f} checksum {checksum:.6e}")


if __name__ == "__main__":
    main(sys.argv[1:])
