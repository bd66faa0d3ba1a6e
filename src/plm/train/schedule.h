// Learning-rate schedules exactly as PLM's core/optim.py (docs/reference.md 5.3): a factor m(step) on optim.lr, used
// through a LambdaLR, so the k-th optimizer update (k = 1, 2, ...) runs at lr * m(k - 1): the first update has lr 0
// under any warmup (Adam's moments move, the weights do not). plm keeps that, to train exactly as the reference.
#pragma once

#include <cstdint>

#include "plm/config/args.h"

namespace plm::train {

/// m(step) for optim.scheduler over a run of `total_steps` optimizer steps:
/// - constant: 1;
/// - linear: warmup ramp step/warmup, then 1 -> lr_min_ratio linearly until total_steps, then lr_min_ratio;
/// - cosine: ramp, then lr_min_ratio + (1 - lr_min_ratio)(1 + sign cos(pi s^theta / cycle_length))/2 with
///   s = (step - warmup)/(total - warmup) and PLM's alternating sign per cycle (at step == total the factor is 1,
///   a step the reference never uses), then lr_min_ratio;
/// - inv_sqrt: ramp, then max(warmup^e / step^e, lr_min_ratio), e = exp_factor (step 0 without warmup: 1);
/// - wsd: ramp, 1 until the decay window (decay_fraction of the cycle), then 1 / (t/n / min + (1 - t/n)), then min.
double lr_factor(const config::OptimArgs& optim, int64_t total_steps, int64_t step);

/// The learning rate of the k-th optimizer update (k >= 1): optim.lr * lr_factor(k - 1).
double lr_for_update(const config::OptimArgs& optim, int64_t total_steps, int64_t k);

}  // namespace plm::train
