// One AdamW step's time on the CPU: plm's AdamW (ATen's fused kernel) against LibTorch's torch::optim::AdamW, whose
// per-tensor sequence of elementwise ops is what plm ran before, over decoder-like fp32 tensors (matrices of
// hidden x hidden and their norm vectors), with the largest difference of the updated weights. Run by
// bench/adamw_bench.sh.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>

#include "plm/train/adamw.h"

using namespace plm;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const int64_t hidden = argc > 1 ? std::atoll(argv[1]) : 2048, matrices = argc > 2 ? std::atoll(argv[2]) : 12;
  const int steps = 5;
  at::manual_seed(0);
  std::vector<at::Tensor> ours, theirs;
  for (int64_t i = 0; i < 3 * matrices; ++i) {
    const at::Tensor t = i < matrices ? at::randn({hidden, hidden}) : at::randn({hidden});
    ours.push_back(t.clone().requires_grad_());
    theirs.push_back(t.clone().requires_grad_());
    const at::Tensor g = at::randn_like(t);
    ours.back().mutable_grad() = g.clone();
    theirs.back().mutable_grad() = g.clone();
  }
  config::OptimArgs o;
  o.weight_decay = 0.05;
  NamedTensors named;
  for (size_t i = 0; i < ours.size(); ++i) named.emplace_back(std::to_string(i), ours[i]);
  train::AdamW plm_adamw(named, o);
  torch::optim::AdamW libtorch_adamw(
      theirs, torch::optim::AdamWOptions(1e-4).betas({o.beta1, o.beta2}).eps(o.epsilon).weight_decay(o.weight_decay));
  auto time = [&](auto&& step) {
    step();  // the first step allocates the moments
    const auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) step();
    return std::chrono::duration<double>(Clock::now() - t0).count() / steps;
  };
  const double t_libtorch = time([&] { libtorch_adamw.step(); });
  const double t_plm = time([&] { plm_adamw.step(1e-4); });
  double diff = 0;
  for (size_t i = 0; i < ours.size(); ++i) diff = std::max(diff, (ours[i] - theirs[i]).abs().max().item<double>());
  int64_t n = 0;
  for (const at::Tensor& t : ours) n += t.numel();
  std::cout << fmt::format("{} parameters in {} tensors, {} threads\n", n, ours.size(), at::get_num_threads())
            << fmt::format("torch::optim::AdamW  {:.4f} s/step\nplm fused AdamW      {:.4f} s/step ({:.1f}x)\n",
                           t_libtorch, t_plm, t_libtorch / t_plm)
            << fmt::format("largest weight difference after {} steps: {:.3g}\n", steps + 1, diff);
}
