// Checkpoint store throughput on a 1 GiB model: save (write + fsync + read-back CRC), verify from the page cache
// and cold, against write_safetensors alone. Run by bench/checkpoint_bench.sh; PLM_BENCH_DIR picks the disk.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "plm/ckpt/checkpoint_store.h"

namespace fs = std::filesystem;
using namespace plm;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main() {
  const char* where = std::getenv("PLM_BENCH_DIR");
  const fs::path root = fs::path(where ? where : fs::temp_directory_path().string()) / "plm_store_bench";
  fs::remove_all(root);
  ckpt::CheckpointContents c;
  for (int i = 0; i < 16; ++i) c.model.insert(fmt::format("layers.{}.w", i), at::randn({4096, 4096}));  // 1 GiB
  c.params_json = "{}";
  c.train_state_json = "{}";
  const ckpt::CheckpointStore store(root.string(), {}, {});
  const double gib = 16.0 * 4096 * 4096 * 4 / (1 << 30);
  auto t0 = Clock::now();
  const std::string dir = store.save(1, c);
  const double save_s = seconds_since(t0);
  t0 = Clock::now();
  ckpt::CheckpointStore::verify(dir);
  const double verify_s = seconds_since(t0);
  for (const auto& e : fs::directory_iterator(dir)) {  // evict the (clean, flushed) pages: a cold read
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  t0 = Clock::now();
  ckpt::CheckpointStore::verify(dir);
  const double cold_s = seconds_since(t0);
  t0 = Clock::now();
  ckpt::write_safetensors(c.model, (root / "plain.safetensors").string());
  const double plain_s = seconds_since(t0);
  std::cout << fmt::format(
      "{:.2f} GiB: save {:.2f} s = {:.2f} GiB/s (write + fsync + read-back CRC; write_safetensors "
      "alone {:.2f} s); verify {:.2f} s = {:.2f} GiB/s from the page cache, {:.2f} s = {:.2f} GiB/s "
      "cold\n",
      gib, save_s, gib / save_s, plain_s, verify_s, gib / verify_s, cold_s, gib / cold_s);
  fs::remove_all(root);
  return 0;
}
