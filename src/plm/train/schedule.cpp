#include "plm/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace plm::train {
namespace {

double ramp(int64_t step, int64_t warmup) {
  return static_cast<double>(step) / static_cast<double>(warmup);
}

double linear(const config::OptimArgs& o, int64_t n, int64_t step) {
  if (step < o.warmup) return ramp(step, o.warmup);
  if (step <= n) {
    const double s = static_cast<double>(step - o.warmup) / static_cast<double>(n - o.warmup);
    return s * o.lr_min_ratio + (1 - s);
  }
  return o.lr_min_ratio;
}

double inv_sqrt(const config::OptimArgs& o, int64_t step) {
  if (step < o.warmup) return ramp(step, o.warmup);
  if (step == 0) return 1.0;  // the reference divides 0 by 0 here (warmup 0)
  return std::max(
      std::pow(static_cast<double>(o.warmup), o.exp_factor) / std::pow(static_cast<double>(step), o.exp_factor),
      o.lr_min_ratio);
}

double cosine(const config::OptimArgs& o, int64_t n, int64_t step) {
  // Python: ((step // (n * cycle_length)) % 2) * -2 + 1 with float floor division
  const double cycles = std::floor(static_cast<double>(step) / (static_cast<double>(n) * o.cycle_length));
  const double sign = std::fmod(cycles, 2.0) * -2 + 1;
  if (step < o.warmup) return ramp(step, o.warmup);
  if (step <= n) {
    const double s = static_cast<double>(step - o.warmup) / static_cast<double>(n - o.warmup);
    return o.lr_min_ratio +
           0.5 * (1 - o.lr_min_ratio) * (sign * std::cos(M_PI * std::pow(s, o.cosine_theta) / o.cycle_length) + 1);
  }
  return o.lr_min_ratio;
}

double wsd(const config::OptimArgs& o, int64_t n, int64_t step) {
  const auto cycle = static_cast<int64_t>(static_cast<double>(n) * o.cycle_length);  // Python int()
  const int64_t cycle_num = step / cycle + 1;
  const int64_t curr = cycle * cycle_num;
  const auto decay = static_cast<int64_t>(static_cast<double>(curr) * o.decay_fraction);
  if (step < o.warmup) return ramp(step, o.warmup);
  if (step <= curr - decay) return 1.0;
  if (step <= curr) {
    const double t = static_cast<double>(step - (curr - decay)) / static_cast<double>(curr);
    return 1 / (t * (1 / o.lr_min_ratio) + (1 - t));
  }
  return o.lr_min_ratio;
}

}  // namespace

double lr_factor(const config::OptimArgs& o, int64_t n, int64_t step) {
  if (o.scheduler == "constant") return 1.0;
  if (o.scheduler == "linear") return linear(o, n, step);
  if (o.scheduler == "inv_sqrt") return inv_sqrt(o, step);
  if (o.scheduler == "cosine") return cosine(o, n, step);
  if (o.scheduler == "wsd") return wsd(o, n, step);
  throw std::invalid_argument("unknown optim.scheduler '" + o.scheduler + "'");
}

double lr_for_update(const config::OptimArgs& o, int64_t n, int64_t k) {
  return o.lr * lr_factor(o, n, k - 1);
}

}  // namespace plm::train
