// Image preprocessing throughput on one thread: load_image_rgb + thumb_and_tiles(36 tiles of 448) for every .jpg
// in a folder, `repeats` times; prints the best pass (process CPU time) and where its time went. Paired with
// bench/image_bench.py (Pillow + torchvision, PLM's reference transform) by bench/image_bench.sh.
#include <algorithm>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "plm/media/image.h"
#include "plm/media/tiling.h"

namespace {
/// CPU seconds used by this process: unlike wall time, not inflated when other work shares the cores.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: image_bench DIR [repeats] [max_tiles]\n";
    return 2;
  }
  at::set_num_threads(1);
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const int64_t max_tiles = argc > 3 ? std::atoll(argv[3]) : 36;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    if (e.path().extension() == ".jpg") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  double best = 1e30, best_decode = 0;
  int64_t chunks = 0;
  for (int r = 0; r < repeats; ++r) {
    double decode = 0;
    chunks = 0;
    const double t0 = cpu_seconds();
    for (const std::string& f : files) {
      const double t1 = cpu_seconds();
      const at::Tensor rgb = plm::media::load_image_rgb(f);
      decode += cpu_seconds() - t1;
      chunks += plm::media::thumb_and_tiles(rgb, max_tiles, 448).pixels.size(0);
    }
    const double total = cpu_seconds() - t0;
    if (total < best) best = total, best_decode = decode;
  }
  std::cout << "plm " << files.size() << " images " << chunks << " chunks " << best << " s " << files.size() / best
            << " samples/s (CPU time; decode " << best_decode << " s, resize+tiles " << best - best_decode << " s)\n";
}
