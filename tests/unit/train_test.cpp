// Optimizer, schedules and clipping against the reference formulas (docs/reference.md 5.3) and LibTorch's own AdamW.
#include "torch_catch.h"

#include <cmath>

#include <torch/optim/adamw.h>

#include "plm/train/adamw.h"
#include "plm/train/schedule.h"

using namespace plm;

namespace {

config::OptimArgs optim(const std::string& scheduler, int64_t warmup = 10, double min_ratio = 0.1) {
  config::OptimArgs o;
  o.scheduler = scheduler;
  o.warmup = warmup;
  o.lr_min_ratio = min_ratio;
  return o;
}

}  // namespace

TEST_CASE("cosine: ramp, the cosine between warmup and N, min after N, 1 at exactly N (the reference's quirk)") {
  const auto o = optim("cosine", 10, 0.01);
  CHECK(train::lr_factor(o, 100, 0) == 0.0);
  CHECK(train::lr_factor(o, 100, 5) == 0.5);
  CHECK(train::lr_factor(o, 100, 10) == Approx(1.0));
  const double s = 45.0 / 90.0;
  CHECK(train::lr_factor(o, 100, 55) == Approx(0.01 + 0.5 * 0.99 * (std::cos(M_PI * s) + 1)));
  CHECK(train::lr_factor(o, 100, 99) == Approx(0.01 + 0.5 * 0.99 * (std::cos(M_PI * 89.0 / 90.0) + 1)));
  CHECK(train::lr_factor(o, 100, 100) == Approx(1.0));  // sign flips at step == N
  CHECK(train::lr_factor(o, 100, 101) == 0.01);
  // the k-th update uses m(k - 1): the first one runs at lr 0
  CHECK(train::lr_for_update(o, 100, 1) == 0.0);
  CHECK(train::lr_for_update(o, 100, 2) == Approx(o.lr * 0.1));
}

TEST_CASE("linear, constant, inv_sqrt and wsd at their boundaries") {
  const auto lin = optim("linear", 10, 0.1);
  CHECK(train::lr_factor(lin, 110, 10) == Approx(1.0));
  CHECK(train::lr_factor(lin, 110, 60) == Approx(0.5 * 0.1 + 0.5));
  CHECK(train::lr_factor(lin, 110, 110) == Approx(0.1));
  CHECK(train::lr_factor(lin, 110, 111) == 0.1);
  CHECK(train::lr_factor(optim("constant"), 10, 7) == 1.0);
  auto inv = optim("inv_sqrt", 100, 0.05);
  CHECK(train::lr_factor(inv, 0, 50) == 0.5);
  CHECK(train::lr_factor(inv, 0, 400) == Approx(0.5));  // (100/400)^0.5
  CHECK(train::lr_factor(inv, 0, 1000000) == 0.05);
  auto w = optim("wsd", 10, 0.1);
  w.decay_fraction = 0.2;
  CHECK(train::lr_factor(w, 100, 80) == 1.0);  // decay starts after 100 - int(100 * 0.2)
  const double t = 10.0 / 100.0;
  CHECK(train::lr_factor(w, 100, 90) == Approx(1 / (t / 0.1 + (1 - t))));
  CHECK(train::lr_factor(w, 100, 99) == Approx(1 / (0.19 / 0.1 + 0.81)));
  CHECK(train::lr_factor(w, 100, 99) < train::lr_factor(w, 100, 90));
  CHECK(train::lr_factor(w, 100, 100) == 1.0);  // step N opens the next cycle in the reference too
  CHECK_THROWS(train::lr_factor(optim("nope"), 10, 1));
}

TEST_CASE(
    "AdamW matches LibTorch's AdamW step for step, decays every parameter, and the first lr-0 step moves only "
    "moments") {
  at::manual_seed(0);
  const at::Tensor w0 = at::randn({4, 3}), b0 = at::randn({4});
  at::Tensor w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
  at::Tensor rw = w0.clone().requires_grad_(), rb = b0.clone().requires_grad_();
  config::OptimArgs o;
  o.weight_decay = 0.1;
  train::AdamW ours({{"w", w}, {"b", b}}, o);
  torch::optim::AdamW reference(
      {rw, rb}, torch::optim::AdamWOptions(1.0).betas({o.beta1, o.beta2}).eps(o.epsilon).weight_decay(o.weight_decay));
  for (int k = 1; k <= 5; ++k) {
    const double lr = train::lr_for_update(optim("cosine", 2, 0.1), 10, k) * 1e-2;
    const at::Tensor x = at::randn({2, 3});
    for (auto [p, q] : {std::pair{w, b}, std::pair{rw, rb}}) (at::matmul(x, p.t()) + q).pow(2).sum().backward();
    for (auto& group : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    ours.step(lr);
    reference.step();
    if (k == 1) {
      CHECK(at::equal(w, w0));  // lr 0: no movement, no decay
      CHECK(ours.state().size() == 6);
    }
    CHECK(at::allclose(w, rw, 1e-6, 1e-7));
    CHECK(at::allclose(b, rb, 1e-6, 1e-7));
    ours.zero_grad();
    reference.zero_grad();
  }
  // state round trip
  train::AdamW copy({{"w", w.detach().clone().requires_grad_()}, {"b", b.detach().clone().requires_grad_()}}, o);
  copy.load_state(ours.state());
  const auto a = ours.state(), c = copy.state();
  for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i].second, c[i].second));
  // no decay on 1-D parameters when asked
  at::Tensor v = at::ones({3}).requires_grad_();
  train::AdamW nodecay({{"v", v}}, o, /*decay_norms_and_biases=*/false);
  v.mutable_grad() = at::zeros({3});
  nodecay.step(1.0);
  CHECK(at::equal(v, at::ones({3})));
}

TEST_CASE("clip_grad_norm: global norm over all gradients, scaled to max_norm") {
  at::Tensor a = at::zeros({2}).requires_grad_(), b = at::zeros({1}).requires_grad_();
  a.mutable_grad() = at::tensor(std::vector<float>{3, 0});
  b.mutable_grad() = at::tensor(std::vector<float>{4});
  const double norm = train::clip_grad_norm({{"a", a}, {"b", b}}, 1.0);
  CHECK(norm == Approx(5.0));
  CHECK(a.grad()[0].item<float>() == Approx(3.0 / (5 + 1e-6)));
  CHECK(train::clip_grad_norm({{"a", a}, {"b", b}}, 10.0) == Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
}
