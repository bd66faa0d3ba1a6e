// plm's video path on whole files: read_clip (probe, 1-fps sampling of up to 32 frames, decode) + video_pixels
// (448x448 antialiased bicubic + normalisation), as the data pipeline runs it for one video sample.
// Usage: video_bench [--threads N] [--repeats R] VIDEO...
//   --threads 1: one core (LibTorch intra-op threads 1, FFmpeg decoder threads 1); 0: FFmpeg's default threaded
//   decode and LibTorch's default threads. Prints one line: samples, seconds (decode / resize), samples/s, the
//   process's CPU seconds and samples per CPU second (steadier than wall time on a shared machine), checksum.
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "plm/media/video.h"

int main(int argc, char** argv) {
  int threads = 1, repeats = 1;
  std::vector<std::string> videos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else if (a == "--repeats" && i + 1 < argc) {
      repeats = std::stoi(argv[++i]);
    } else {
      videos.push_back(a);
    }
  }
  if (videos.empty()) {
    std::fprintf(stderr, "usage: video_bench [--threads N] [--repeats R] VIDEO...\n");
    return 2;
  }
  at::set_num_threads(1);  // the resize runs on one core in both modes; --threads only changes the decoder
  using clock = std::chrono::steady_clock;
  double decode_s = 0, resize_s = 0, checksum = 0;
  int samples = 0;
  const std::clock_t cpu0 = std::clock();
  for (int r = 0; r < repeats; ++r) {
    for (const auto& path : videos) {
      const auto t0 = clock::now();
      const plm::media::DecodedFrames clip = plm::media::read_clip(path, std::nullopt, std::nullopt, 32, threads);
      const auto t1 = clock::now();
      const at::Tensor pixels = plm::media::video_pixels(clip, 448);
      const auto t2 = clock::now();
      decode_s += std::chrono::duration<double>(t1 - t0).count();
      resize_s += std::chrono::duration<double>(t2 - t1).count();
      if (r == 0) checksum += pixels.sum(at::kDouble).item<double>();
      ++samples;
    }
  }
  const double cpu_s = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  const double total = decode_s + resize_s;
  const unsigned cores = threads == 1 ? 1 : std::max(1u, std::thread::hardware_concurrency());
  std::printf(
      "plm      threads=%d cores=%u samples %d time %.2f s (decode %.2f, resize+normalise %.2f) "
      "samples/s %.3f samples/s/core %.3f cpu %.2f s samples/cpu-s %.3f checksum %.6e\n",
      threads, cores, samples, total, decode_s, resize_s, samples / total, samples / total / cores, cpu_s,
      samples / cpu_s, checksum);
  return 0;
}
