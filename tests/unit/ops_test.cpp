// The ops:: primitives, one table of cases in the manner of llama.cpp's test-backend-ops: each case names an op, its
// inputs (odd shapes included), and an explicit formula of what it computes. Every case is checked
//   - on the CPU (in CI): the ATen path against the formula evaluated in double, forward and gradients, in fp32 and
//     bf16; and its backward against central finite differences in double;
//   - on CUDA (hidden tag [cuda], run by scripts/device/gpu_checks.sh): the op on CUDA tensors, which is where a
//     kernel would take over, against the ATen path on the CPU, forward and backward, in fp32 and bf16.
// Inputs are random; the seed is printed on failure and PLM_TEST_SEED repeats it.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <torch/csrc/autograd/autograd.h>

#include "plm/common/log.h"
#include "plm/ops/ops.h"
#include "torch_catch.h"

using namespace plm;
using Tensors = std::vector<at::Tensor>;

namespace {

uint64_t test_seed() {
  if (const char* s = std::getenv("PLM_TEST_SEED")) return std::stoull(s);
  return std::random_device{}();
}

/// One op on fixed shapes. `inputs` draws fp32 inputs from the global generator (the first `differentiable` of them
/// take gradients); `op` runs the ops:: call; `formula` is what it computes, written out, on double inputs.
struct OpCase {
  std::string name;
  std::function<Tensors()> inputs;
  size_t differentiable;
  std::function<at::Tensor(const Tensors&)> op, formula;
};

at::Tensor causal_mask(int64_t s) {
  return at::ones({s, s}, at::kBool).tril();
}

/// softmax(q k^T * scale + mask) v head by head, query head h reading kv head h / (H / Hkv).
at::Tensor attention_formula(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  const int64_t heads = q.size(1), group = heads / k.size(1);
  Tensors out;
  for (int64_t h = 0; h < heads; ++h) {
    const at::Tensor qh = q.select(1, h), kh = k.select(1, h / group), vh = v.select(1, h / group);
    at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
    const at::Tensor m = mask.dim() == 4 ? mask.select(1, 0) : mask;  // [B, 1, S, Skv] or [S, Skv]
    scores = scores.masked_fill(m.expand_as(scores).logical_not(), -INFINITY);
    const at::Tensor e = (scores - std::get<0>(scores.max(-1, true))).exp();
    out.push_back(at::matmul(e / e.sum(-1, true), vh));
  }
  return at::stack(out, 1);
}

/// -log(exp(logits[t]) / sum exp(logits)) averaged over rows, row by row.
at::Tensor cross_entropy_formula(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor total = at::zeros({}, logits.options());
  for (int64_t i = 0; i < logits.size(0); ++i) {
    const at::Tensor row = logits[i];
    const at::Tensor m = row.max();
    total = total + (m + (row - m).exp().sum().log() - row[targets[i].item<int64_t>()]);
  }
  return total / static_cast<double>(logits.size(0));
}

/// Each of `rows` rows of `s` tokens cut at random into sequences (data/packing.h), some rows leaving a rest of
/// padding (a sequence of its own for ops::packed_attention), drawn from the global generator.
std::vector<std::vector<int64_t>> random_segments(int64_t rows, int64_t s) {
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(rows));
  for (auto& row : out) {
    int64_t left = s - at::randint(0, s / 3 + 1, {1}).item<int64_t>();  // the samples' tokens; the rest is padding
    while (left > 0) {
      int64_t n = std::min(left, at::randint(1, s / 2 + 2, {1}).item<int64_t>());
      // The first sequence of row 0 has two tokens or more: with only one-token sequences every key gradient would
      // be zero in exact arithmetic, and the comparison would judge rounding noise against zero.
      if (&row == &out.front() && row.empty()) n = std::max(n, std::min<int64_t>(2, left));
      row.push_back(n);
      left -= n;
    }
  }
  return out;
}

/// Query i reads key j when both are in the same sequence of the row's `segments` (its rest counted as one more)
/// and j <= i: bool [B, 1, S, S].
at::Tensor block_causal_mask(const std::vector<std::vector<int64_t>>& segments, int64_t s) {
  at::Tensor id = at::empty({static_cast<int64_t>(segments.size()), s}, at::kLong);
  for (size_t r = 0; r < segments.size(); ++r) {
    int64_t offset = 0, k = 0;
    for (const int64_t n : segments[r]) id[static_cast<int64_t>(r)].narrow(0, offset, n).fill_(k++), offset += n;
    if (offset < s) id[static_cast<int64_t>(r)].narrow(0, offset, s - offset).fill_(k);
  }
  return ((id.unsqueeze(2) == id.unsqueeze(1)) & causal_mask(s)).unsqueeze(1);
}

/// Random rotation angles for rotate_pairs, as cos and sin [S, 1, D/2] (broadcast over heads).
Tensors angles(int64_t s, int64_t d) {
  const at::Tensor a = at::rand({s, 1, d / 2}) * 6.3;
  return {a.cos(), a.sin()};
}

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases;
  for (const int64_t d : {3, 7, 64, 130}) {
    cases.push_back({"rms_norm D=" + std::to_string(d),
                     [d] {
                       return Tensors{at::randn({3, 5, d}) * 3, at::randn({d})};
                     },
                     2, [](const Tensors& t) { return ops::rms_norm(t[0], t[1], 1e-5); },
                     [](const Tensors& t) {
                       const at::Tensor ms = (t[0] * t[0]).sum(-1, true) / static_cast<double>(t[0].size(-1));
                       return t[0] / (ms + 1e-5).sqrt() * t[1];
                     }});
    cases.push_back({"layer_norm D=" + std::to_string(d + 1),
                     [d] {
                       return Tensors{at::randn({4, d + 1}) * 2 + 1, at::randn({d + 1}), at::randn({d + 1})};
                     },
                     3, [](const Tensors& t) { return ops::layer_norm(t[0], t[1], t[2]); },
                     [](const Tensors& t) {
                       const double n = static_cast<double>(t[0].size(-1));
                       const at::Tensor mean = t[0].sum(-1, true) / n;
                       const at::Tensor var = ((t[0] - mean) * (t[0] - mean)).sum(-1, true) / n;
                       return (t[0] - mean) / (var + 1e-5).sqrt() * t[1] + t[2];
                     }});
    cases.push_back({"swiglu D=" + std::to_string(d),
                     [d] {
                       return Tensors{at::randn({2, 3, d}) * 3, at::randn({2, 3, d})};
                     },
                     2, [](const Tensors& t) { return ops::swiglu(t[0], t[1]); },
                     [](const Tensors& t) { return t[0] / (1 + (-t[0]).exp()) * t[1]; }});
  }
  for (const int64_t d : {2, 6, 64, 128}) {
    cases.push_back({"rotate_pairs D=" + std::to_string(d),
                     [d] {
                       Tensors t{at::randn({2, 9, 3, d})};
                       for (const at::Tensor& a : angles(9, d)) t.push_back(a);
                       return t;
                     },
                     1, [](const Tensors& t) { return ops::rotate_pairs(t[0], t[1], t[2]); },
                     [](const Tensors& t) {
                       at::Tensor out = at::empty_like(t[0]);
                       for (int64_t j = 0; j < t[0].size(-1) / 2; ++j) {
                         const at::Tensor x0 = t[0].select(-1, 2 * j), x1 = t[0].select(-1, 2 * j + 1);
                         const at::Tensor c = t[1].select(-1, j), s = t[2].select(-1, j);
                         out.select(-1, 2 * j).copy_(x0 * c - x1 * s);
                         out.select(-1, 2 * j + 1).copy_(x1 * c + x0 * s);
                       }
                       return out;
                     }});
  }
  struct Heads {
    int64_t b, h, hkv, s, d;
  };
  for (const Heads a : {Heads{1, 1, 1, 1, 8}, Heads{2, 4, 2, 17, 16}, Heads{1, 8, 2, 33, 64}, Heads{2, 2, 2, 5, 128}}) {
    const std::string shape = "B=" + std::to_string(a.b) + " H=" + std::to_string(a.h) +
                              " Hkv=" + std::to_string(a.hkv) + " S=" + std::to_string(a.s) +
                              " D=" + std::to_string(a.d);
    auto qkv = [a] {
      return Tensors{at::randn({a.b, a.h, a.s, a.d}), at::randn({a.b, a.hkv, a.s, a.d}),
                     at::randn({a.b, a.hkv, a.s, a.d})};
    };
    cases.push_back({"attention causal " + shape, qkv, 3,
                     [](const Tensors& t) { return ops::attention(t[0], t[1], t[2], true); },
                     [](const Tensors& t) { return attention_formula(t[0], t[1], t[2], causal_mask(t[0].size(2))); }});
    cases.push_back({"attention full " + shape, qkv, 3,
                     [](const Tensors& t) { return ops::attention(t[0], t[1], t[2], false); },
                     [](const Tensors& t) {
                       return attention_formula(t[0], t[1], t[2], at::ones({t[0].size(2), t[0].size(2)}, at::kBool));
                     }});
    cases.push_back({"masked_attention " + shape,
                     [qkv, a] {
                       Tensors t = qkv();
                       // a random mask in which every query reads at least its own position
                       at::Tensor mask = (at::rand({a.b, 1, a.s, a.s}) > 0.5).logical_or(at::eye(a.s, at::kBool));
                       t.push_back(mask);
                       return t;
                     },
                     3, [](const Tensors& t) { return ops::masked_attention(t[0], t[1], t[2], t[3]); },
                     [](const Tensors& t) { return attention_formula(t[0], t[1], t[2], t[3]); }});
    const auto segments = random_segments(a.b, a.s);
    cases.push_back({"packed_attention " + shape, qkv, 3,
                     [segments](const Tensors& t) { return ops::packed_attention(t[0], t[1], t[2], segments); },
                     [segments](const Tensors& t) {
                       return attention_formula(t[0], t[1], t[2], block_causal_mask(segments, t[0].size(2)));
                     }});
  }
  struct Head {
    int64_t n, d, v, chunk;
  };
  for (const Head a :
       {Head{1, 3, 5, 0}, Head{13, 8, 50, 1}, Head{13, 8, 50, 4}, Head{40, 16, 257, 0}, Head{9, 5, 11, 100}}) {
    const std::string shape = "N=" + std::to_string(a.n) + " D=" + std::to_string(a.d) + " V=" + std::to_string(a.v);
    auto head = [a] {
      return Tensors{at::randn({a.n, a.d}), at::randn({a.v, a.d}) * 0.7, at::randint(0, a.v, {a.n}, at::kLong)};
    };
    cases.push_back({"cross_entropy " + shape,
                     [head] {
                       Tensors t = head();
                       return Tensors{at::linear(t[0], t[1]) * 2, t[2]};
                     },
                     1, [](const Tensors& t) { return ops::cross_entropy(t[0], t[1]); },
                     [](const Tensors& t) { return cross_entropy_formula(t[0], t[1]); }});
    cases.push_back({"linear_cross_entropy " + shape + " chunk=" + std::to_string(a.chunk), head, 2,
                     [a](const Tensors& t) { return ops::linear_cross_entropy(t[0], t[1], t[2], a.chunk); },
                     [](const Tensors& t) { return cross_entropy_formula(at::matmul(t[0], t[1].t()), t[2]); }});
  }
  return cases;
}

/// The case's inputs in `dtype` on `device` (integer and boolean inputs keep theirs), the differentiable ones
/// requiring gradients.
Tensors prepared(const OpCase& c, const Tensors& base, at::ScalarType dtype, at::Device device) {
  Tensors t;
  for (size_t i = 0; i < base.size(); ++i) {
    at::Tensor x = base[i].is_floating_point() ? base[i].to(device, dtype) : base[i].to(device);
    if (i < c.differentiable) x = x.detach().requires_grad_(true);
    t.push_back(x);
  }
  return t;
}

/// The output and the gradients of sum(out * weights) with respect to the differentiable inputs.
struct Evaluated {
  at::Tensor out;
  Tensors grads;
};

Evaluated evaluate(const OpCase& c, const std::function<at::Tensor(const Tensors&)>& f, const Tensors& t,
                   const at::Tensor& weights) {
  Evaluated e;
  e.out = f(t);
  const at::Tensor objective = (e.out.to(at::kDouble) * weights.to(e.out.device())).sum();
  Tensors wrt(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(c.differentiable));
  for (const at::Tensor& g : torch::autograd::grad({objective}, wrt)) e.grads.push_back(g.cpu().to(at::kDouble));
  e.out = e.out.detach().cpu().to(at::kDouble);
  return e;
}

/// max |got - want| <= atol + rtol max |want|: one scale per tensor, so that values near zero are not judged alone.
void check_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol, const std::string& what) {
  INFO(what);
  REQUIRE(got.sizes() == want.sizes());
  REQUIRE(bool(got.isfinite().all().item<bool>()));
  const double err = (got - want).abs().max().item<double>();
  const double scale = want.abs().max().item<double>();
  CAPTURE(err, scale);
  CHECK(err <= atol + rtol * scale);
}

struct Tolerance {
  double rtol, atol;
};

Tolerance tolerance(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? Tolerance{3e-2, 1e-2} : Tolerance{2e-5, 1e-6};
}

}  // namespace

TEST_CASE("ops: every case against its formula, forward and gradients, fp32 and bf16 (CPU)") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  for (const OpCase& c : op_cases()) {
    const Tensors base = c.inputs();
    const at::Tensor probe = c.formula(prepared(c, base, at::kDouble, at::kCPU));
    const at::Tensor weights = at::randn(probe.sizes(), at::kDouble);
    const Evaluated want = evaluate(c, c.formula, prepared(c, base, at::kDouble, at::kCPU), weights);
    for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = c.name + (dtype == at::kFloat ? " fp32" : " bf16");
      // bf16 inputs are the fp32 ones rounded: the formula sees the same rounded values.
      const Tensors rounded = prepared(c, base, dtype, at::kCPU);
      Tensors exact;
      for (const at::Tensor& x : rounded) exact.push_back(x.is_floating_point() ? x.detach().to(at::kDouble) : x);
      const Evaluated ref =
          dtype == at::kFloat ? want : evaluate(c, c.formula, prepared(c, exact, at::kDouble, at::kCPU), weights);
      const Evaluated got = evaluate(c, c.op, rounded, weights);
      const Tolerance tol = tolerance(dtype);
      check_close(got.out, ref.out, tol.rtol, tol.atol, what + ": output");
      for (size_t i = 0; i < got.grads.size(); ++i)
        check_close(got.grads[i], ref.grads[i], tol.rtol * 4, tol.atol, what + ": gradient " + std::to_string(i));
    }
  }
}

TEST_CASE("ops: every backward against central finite differences in double (CPU)") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  for (const OpCase& c : op_cases()) {
    INFO(c.name);
    const Tensors t = prepared(c, c.inputs(), at::kDouble, at::kCPU);
    const at::Tensor weights = at::randn(c.op(t).sizes(), at::kDouble);
    const Evaluated e = evaluate(c, c.op, t, weights);
    // d/de objective(x + e u) at e = 0 is sum_i <grad_i, u_i>, for a random direction u over all inputs at once.
    Tensors direction;
    double predicted = 0;
    for (size_t i = 0; i < c.differentiable; ++i) {
      direction.push_back(at::randn(t[i].sizes(), at::kDouble));
      predicted += (e.grads[i] * direction.back()).sum().item<double>();
    }
    auto objective_at = [&](double step) {
      at::NoGradGuard no_grad;
      Tensors moved = t;
      for (size_t i = 0; i < c.differentiable; ++i) moved[i] = t[i].detach() + step * direction[i];
      return (c.op(moved) * weights).sum().item<double>();
    };
    const double h = 1e-6;
    const double measured = (objective_at(h) - objective_at(-h)) / (2 * h);
    CAPTURE(predicted, measured);
    CHECK(std::abs(predicted - measured) <= 1e-6 * (1 + std::abs(measured)));
  }
}

TEST_CASE("ops: linear_cross_entropy equals the plain output layer + cross_entropy within 1e-6 (fp32)") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  const int64_t n = 1 + static_cast<int64_t>(seed % 300), d = 32, v = 1000 + static_cast<int64_t>(seed % 777);
  const at::Tensor h = at::randn({n, d}), w = at::randn({v, d}) * 0.2, targets = at::randint(0, v, {n}, at::kLong);
  auto run = [&](bool chunked, int64_t chunk) {
    const at::Tensor hh = h.clone().requires_grad_(true), ww = w.clone().requires_grad_(true);
    const at::Tensor loss =
        chunked ? ops::linear_cross_entropy(hh, ww, targets, chunk) : ops::cross_entropy(at::linear(hh, ww), targets);
    loss.backward();
    return Tensors{loss.detach(), hh.grad(), ww.grad()};
  };
  const Tensors plain = run(false, 0);
  for (const int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{7}, n, n + 3}) {
    CAPTURE(n, v, chunk);
    const Tensors fused = run(true, chunk);
    CHECK(std::abs(fused[0].item<double>() - plain[0].item<double>()) <= 1e-6 * std::abs(plain[0].item<double>()));
    // gradients: relative in the Frobenius norm (their elements are sums in a different order, rounded apart)
    for (size_t i = 1; i < 3; ++i) {
      const double err = (fused[i] - plain[i]).norm().item<double>();
      const double scale = plain[i].norm().item<double>();
      CAPTURE(i, err, scale);
      CHECK(err <= 1e-6 * scale);
    }
  }
  // no tokens: NaN, as the plain path
  CHECK(std::isnan(ops::linear_cross_entropy(h.slice(0, 0, 0), w, targets.slice(0, 0, 0)).item<double>()));
  // only what needs a gradient gets one: a frozen output layer (stage 1) still passes gradients to h
  const at::Tensor hh = h.clone().requires_grad_(true);
  ops::linear_cross_entropy(hh, w, targets).backward();
  check_close(hh.grad().to(at::kDouble), plain[1].to(at::kDouble), 1e-6, 0, "frozen weight: gradient of h");
}

TEST_CASE("ops: every case on CUDA against the ATen path on the CPU, forward and backward", "[.cuda]") {
  REQUIRE(at::hasCUDA());
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  for (const OpCase& c : op_cases()) {
    const Tensors base = c.inputs();
    const at::Tensor weights = at::randn(c.op(prepared(c, base, at::kFloat, at::kCPU)).sizes(), at::kDouble);
    for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      const std::string what = c.name + (dtype == at::kFloat ? " fp32" : " bf16") + " (cuda)";
      const Evaluated want = evaluate(c, c.op, prepared(c, base, dtype, at::kCPU), weights);
      const Evaluated got = evaluate(c, c.op, prepared(c, base, dtype, at::Device(at::kCUDA)), weights);
      // TF32 is off in LibTorch by default; the bound is the dtype's, as against the formula.
      const Tolerance tol = tolerance(dtype);
      check_close(got.out, want.out, tol.rtol, tol.atol, what + ": output");
      for (size_t i = 0; i < got.grads.size(); ++i)
        check_close(got.grads[i], want.grads[i], tol.rtol * 4, tol.atol, what + ": gradient " + std::to_string(i));
    }
  }
}

TEST_CASE("ops: attention_backend names ATen's choice and attention logs it once per kind") {
  const int64_t d = 24;  // a head size no other case here uses, so that this case's log lines are its own
  const at::Tensor q = at::randn({1, 2, 5, d}), k = at::randn({1, 2, 5, d}), v = at::randn({1, 2, 5, d});
  // ATen's CPU flash kernel takes 4D inputs of one head size with unit last stride; anything else goes to math
  CHECK(ops::attention_backend(q, k, v, std::nullopt, /*causal=*/true) == "flash");
  CHECK(ops::attention_backend(q, k, at::randn({1, 2, 5, 2 * d}), std::nullopt, false) == "math");
  CHECK(ops::attention_backend(q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v, std::nullopt, false) ==
        "math");

  const std::filesystem::path file = std::filesystem::temp_directory_path() / "plm_ops_attention_log.txt";
  std::filesystem::remove(file);
  plm::log::init({0, "INFO", file.string(), true});
  for (int i = 0; i < 3; ++i) ops::attention(q, k, v, /*causal=*/true);
  ops::masked_attention(q, k, v, at::ones({5, 5}, at::kBool).tril());
  ops::masked_attention(q, k, v, at::ones({5, 5}, at::kBool));
  plm::log::flush();
  plm::log::init({});
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (line.find("head size 24") != std::string::npos) lines.push_back(line);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("cpu Float head size 24 causal): flash kernel") != std::string::npos);
  CHECK(lines[1].find("head size 24 masked): flash kernel") != std::string::npos);
  std::filesystem::remove(file);
}

TEST_CASE("ops: bf16 attention on CUDA gets a fused kernel, not the math path", "[.cuda]") {
  REQUIRE(at::hasCUDA());
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor q = at::randn({2, 8, 256, 64}, opts), k = at::randn({2, 2, 256, 64}, opts);
  const at::Tensor v = at::randn({2, 2, 256, 64}, opts);
  CHECK(ops::attention_backend(q, k, v, std::nullopt, /*causal=*/true) != "math");   // the decoder's (GQA)
  CHECK(ops::attention_backend(q, q, q, std::nullopt, /*causal=*/false) != "math");  // the vision tower's
}

TEST_CASE("ops: packed_attention: no query reads across a sequence boundary, and its own sequence decides it") {
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t b = 1 + trial % 3, s = 8 + 7 * trial, h = 4, hkv = trial % 2 ? 2 : 4, d = 16;
    const auto segments = random_segments(b, s);
    CAPTURE(trial, b, s);
    const at::Tensor q = at::randn({b, h, s, d}), k = at::randn({b, hkv, s, d}), v = at::randn({b, hkv, s, d});
    const at::Tensor out = ops::packed_attention(q, k, v, segments);
    // Each sequence alone, as its own batch of one row: the same values (the unpacked computation of that sample).
    for (int64_t r = 0; r < b; ++r) {
      int64_t offset = 0;
      for (const int64_t n : segments[static_cast<size_t>(r)]) {
        const auto part = [&](const at::Tensor& x) { return x.narrow(0, r, 1).narrow(2, offset, n); };
        const at::Tensor alone = ops::attention(part(q), part(k), part(v), /*causal=*/true);
        CHECK(at::allclose(part(out), alone, 1e-6, 1e-6));
        // Another sequence's keys and values changed: this one's output does not move at all.
        const at::Tensor k2 = k.clone(), v2 = v.clone();
        k2.narrow(0, r, 1).narrow(2, offset, n).normal_();
        v2.narrow(0, r, 1).narrow(2, offset, n).normal_();
        const at::Tensor moved = ops::packed_attention(q, k2, v2, segments);
        CHECK(at::equal(moved.narrow(2, 0, offset), out.narrow(2, 0, offset)));  // earlier sequences of the row
        CHECK(at::equal(moved.narrow(2, offset + n, s - offset - n).narrow(0, r, 1),
                        out.narrow(2, offset + n, s - offset - n).narrow(0, r, 1)));  // later ones
        if (n > 0) CHECK_FALSE(at::allclose(part(moved), part(out)));                 // its own does
        offset += n;
      }
    }
  }
}

TEST_CASE("ops: packed_attention on CUDA (variable-length flash) equals the CPU path at the decoder's shapes",
          "[.cuda]") {
  REQUIRE(at::hasCUDA());
  const uint64_t seed = test_seed();
  CAPTURE(seed);
  at::manual_seed(seed);
  // PLM-1B's attention (32 heads, 8 kv heads of 64) over 3 rows of 1,280 tokens cut into 2-9 sequences each.
  const int64_t b = 3, s = 1280, h = 32, hkv = 8, d = 64;
  const auto segments = random_segments(b, s);
  const Tensors cpu{at::randn({b, h, s, d}), at::randn({b, hkv, s, d}), at::randn({b, hkv, s, d})};
  const at::Tensor weights = at::randn({b, h, s, d}, at::kDouble);
  const auto run = [&](at::Device device) {
    Tensors t;
    for (const at::Tensor& x : cpu) t.push_back(x.to(device, at::kBFloat16).detach().requires_grad_(true));
    const at::Tensor out = ops::packed_attention(t[0], t[1], t[2], segments);
    (out.to(at::kDouble) * weights.to(device)).sum().backward();
    Tensors got{out.detach().cpu().to(at::kDouble)};
    for (const at::Tensor& x : t) got.push_back(x.grad().cpu().to(at::kDouble));
    return got;
  };
  const Tensors want = run(at::kCPU), got = run(at::Device(at::kCUDA));
  const Tolerance tol = tolerance(at::kBFloat16);
  check_close(got[0], want[0], tol.rtol, tol.atol, "output");
  for (size_t i = 1; i < 4; ++i) check_close(got[i], want[i], tol.rtol * 4, tol.atol, "gradient " + std::to_string(i));
}
