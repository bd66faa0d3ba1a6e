// The loss head's peak memory and time on the CPU: the output layer + cross-entropy of N loss tokens over a V-id
// vocabulary, forward and backward, the plain way (full [N, V] logits, then at::cross_entropy) against
// ops::linear_cross_entropy at several chunk sizes. Peak is the resident-set high-water mark above the inputs
// (VmHWM after resetting it through /proc/self/clear_refs). Run by bench/loss_head_bench.sh.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include "plm/ops/ops.h"

using namespace plm;
using Clock = std::chrono::steady_clock;

namespace {

int64_t status_kib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  return -1;
}

void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct Result {
  double peak_mib, seconds;
  float loss;
};

// chunk < 0: the plain path; otherwise ops::linear_cross_entropy with that chunk (0: the default).
Result run(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& targets, int64_t chunk) {
  at::Tensor h = h0.detach().requires_grad_(), w = w0.detach().requires_grad_();
  const int64_t base = status_kib("VmRSS");
  reset_peak();
  const auto t0 = Clock::now();
  at::Tensor loss = chunk < 0 ? at::cross_entropy_loss(at::linear(h, w), targets)
                              : ops::linear_cross_entropy(h, w, targets, chunk);
  torch::autograd::backward({loss});
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double peak = (status_kib("VmHWM") - base) / 1024.0;
  return {peak, s, loss.item<float>()};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 4096, d = argc > 2 ? std::atoll(argv[2]) : 256;
  at::manual_seed(0);
  for (const int64_t v : {32768, 128256}) {
    const at::Tensor h = at::randn({n, d}), w = at::randn({v, d}) * 0.02, t = at::randint(v, {n});
    const double logits_mib = static_cast<double>(n) * v * 4 / (1 << 20);
    std::cout << fmt::format("N={} D={} V={} (fp32 logits {:.0f} MiB)\n", n, d, v, logits_mib);
    for (const int64_t chunk : {int64_t{-1}, int64_t{0}, int64_t{4096}, int64_t{1024}, int64_t{256}}) {
      const Result r = run(h, w, t, chunk);
      const std::string name = chunk < 0 ? "plain" : chunk == 0 ? fmt::format("chunked (default {})",
                                                                   std::max<int64_t>(1, ops::kLogitsPerChunk / v))
                                                               : fmt::format("chunked {}", chunk);
      std::cout << fmt::format("  {:<24} peak {:>7.0f} MiB  {:>6.2f} s  loss {:.6f}\n", name, r.peak_mib, r.seconds,
                               r.loss);
    }
  }
}
