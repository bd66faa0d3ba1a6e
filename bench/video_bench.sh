#!/usr/bin/env bash
# Video samples per second per core, plm vs the Python reference (torchcodec + torchvision), same 30-fps 720p files,
# same machine, one core each; plus plm with FFmpeg's default threaded decode, reported apart. Ratios by wall time
# and by CPU time (the steadier one on a shared machine).
# One sample = read_clip(32 frames, whole video) + 448x448 resize + normalisation.
# Usage: bench/video_bench.sh [VIDEO_DIR]   (default /tmp/plm-video-bench: six 20-60 s x264 clips, made once)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build-vid}"
REPEATS="${REPEATS:-2}"
dir="${1:-/tmp/plm-video-bench}"
mkdir -p "$dir"
clip() {  # name seconds lavfi-source: 1280x720, 30 fps, x264 defaults (preset medium, keyint 250, B-frames)
  [ -f "$dir/$1.mp4" ] || ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$3" -t "$2" \
    -c:v libx264 -pix_fmt yuv420p "$dir/$1.mp4"
}
clip testsrc_20s 20 "testsrc2=size=1280x720:rate=30"
clip noisy_30s 30 "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t"
clip mandel_40s 40 "mandelbrot=size=320x180:rate=30,scale=1280:720"
clip life_45s 45 "life=size=1280x720:rate=30:mold=10:ratio=0.1:death_color=#3050a0:life_color=#e0c040"
clip noisy_50s 50 "testsrc2=size=1280x720:rate=30,hue=H=t/3,noise=alls=8:allf=t"
clip mandel_60s 60 "mandelbrot=size=320x180:rate=30:start_scale=2,scale=1280:720"
cmake -S . -B "$BUILD_DIR" -DPLM_BUILD_BENCH=ON >/dev/null && cmake --build "$BUILD_DIR" --target video_bench >/dev/null
videos=("$dir"/*.mp4)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${#videos[@]} videos, x$REPEATS"
plm_line="$(OMP_NUM_THREADS=1 "$BUILD_DIR/bench/video_bench" --threads 1 --repeats "$REPEATS" "${videos[@]}")"
ref_line="$(OMP_NUM_THREADS=1 .venv/bin/python bench/video_bench.py --repeats "$REPEATS" "${videos[@]}")"
threaded_line="$("$BUILD_DIR/bench/video_bench" --threads 0 --repeats "$REPEATS" "${videos[@]}")"
echo "$plm_line"; echo "$ref_line"; echo "$threaded_line"
field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
[ "$(field "$plm_line" checksum)" = "$(field "$ref_line" checksum)" ] || echo "WARNING: checksums differ"
echo "samples/s/core ratio plm/python (one core each): $(echo "scale=2; $(field "$plm_line" samples/s/core) / $(field "$ref_line" samples/s/core)" | bc)"
# Per CPU second: what one core delivers, less sensitive to other load on a shared machine than wall time.
echo "samples/cpu-s ratio plm/python (one core each): $(echo "scale=2; $(field "$plm_line" samples/cpu-s) / $(field "$ref_line" samples/cpu-s)" | bc)"
