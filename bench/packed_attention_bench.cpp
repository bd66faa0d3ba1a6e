// Causal attention over packed rows on the CPU, forward + backward, three ways (bench/packed_attention_bench.sh):
//   unpacked    each sample in its own padded row of L (what the reference computes),
//   buckets     ops::packed_attention: one causal attention() per bucket of sequences of similar length,
//   per-seq     attention() on each sequence's slice of the packed rows, one call per sequence,
//   mask        one SDPA call over the packed rows with a block-diagonal causal mask.
// Usage: packed_attention_bench HEADS KV_HEADS HEAD_DIM ROW_LEN SAMPLE_LEN SAMPLES [REPEATS]
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "plm/data/packing.h"
#include "plm/ops/ops.h"

namespace {

double seconds_of(const std::function<void()>& f, int repeats) {
  f();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / repeats;
}

void fwd_bwd(const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& attend,
             const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const at::Tensor qq = q.detach().requires_grad_(), kk = k.detach().requires_grad_(), vv = v.detach().requires_grad_();
  attend(qq, kk, vv).sum().backward();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s HEADS KV_HEADS HEAD_DIM ROW_LEN SAMPLE_LEN SAMPLES [REPEATS]\n", argv[0]);
    return 2;
  }
  const int64_t h = std::atoll(argv[1]), hkv = std::atoll(argv[2]), d = std::atoll(argv[3]), row = std::atoll(argv[4]),
                mean = std::atoll(argv[5]), samples = std::atoll(argv[6]);
  const int repeats = argc > 7 ? std::atoi(argv[7]) : 3;
  at::manual_seed(0);
  // Sample lengths spread over [mean / 2, 3 mean / 2], as captions and questions vary.
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < samples; ++i)
    lengths.push_back(std::min(row, mean / 2 + at::randint(mean + 1, {1}).item<int64_t>()));
  const auto rows = plm::data::first_fit_decreasing(lengths, row);
  std::vector<std::vector<int64_t>> segments;
  for (const auto& r : rows) {
    segments.emplace_back();
    for (const size_t i : r) segments.back().push_back(lengths[i]);
  }
  const auto b = static_cast<int64_t>(rows.size());
  const at::Tensor q = at::randn({b, h, row, d}), k = at::randn({b, hkv, row, d}), v = at::randn({b, hkv, row, d});
  const at::Tensor uq = at::randn({samples, h, row, d}), uk = at::randn({samples, hkv, row, d}),
                   uv = at::randn({samples, hkv, row, d});
  // The block-diagonal causal mask: key j visible to query i when both are in the same sequence and j <= i.
  at::Tensor seq_id = at::empty({b, row}, at::kLong);
  for (int64_t r = 0; r < b; ++r) {
    int64_t offset = 0, id = 0;
    for (const int64_t n : segments[static_cast<size_t>(r)]) seq_id[r].narrow(0, offset, n).fill_(id++), offset += n;
    if (offset < row) seq_id[r].narrow(0, offset, row - offset).fill_(id);
  }
  const at::Tensor causal = at::ones({row, row}, at::kBool).tril();
  const at::Tensor mask = ((seq_id.unsqueeze(2) == seq_id.unsqueeze(1)) & causal).unsqueeze(1);

  const double unpacked = seconds_of(
      [&] { fwd_bwd([](auto& a, auto& bb, auto& c) { return plm::ops::attention(a, bb, c, true); }, uq, uk, uv); },
      repeats);
  const double per_seq = seconds_of(
      [&] {
        fwd_bwd([&](auto& a, auto& bb, auto& c) { return plm::ops::packed_attention(a, bb, c, segments); }, q, k, v);
      },
      repeats);
  const double per_sequence = seconds_of(
      [&] {
        fwd_bwd(
            [&](auto& a, auto& bb, auto& c) {
              std::vector<int64_t> sizes;
              for (const auto& r : segments) {
                int64_t used = 0;
                for (const int64_t n : r) sizes.push_back(n), used += n;
                if (used < row) sizes.push_back(row - used);
              }
              const auto split = [&](const at::Tensor& x) {
                return x.transpose(1, 2).flatten(0, 1).split_with_sizes(sizes, 0);
              };
              const auto qs = split(a), ks = split(bb), vs = split(c);
              std::vector<at::Tensor> outs;
              for (size_t i = 0; i < sizes.size(); ++i) {
                const auto hm = [](const at::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
                outs.push_back(plm::ops::attention(hm(qs[i]), hm(ks[i]), hm(vs[i]), true).squeeze(0).transpose(0, 1));
              }
              return at::cat(outs, 0).unflatten(0, {a.size(0), row}).transpose(1, 2);
            },
            q, k, v);
      },
      repeats);
  const double masked = seconds_of(
      [&] { fwd_bwd([&](auto& a, auto& bb, auto& c) { return plm::ops::masked_attention(a, bb, c, mask); }, q, k, v); },
      repeats);
  std::printf(
      "heads %lld/%lld, head dim %lld, %lld samples (mean %lld tokens) in %lld rows of %lld; forward + backward:\n"
      "  unpacked (one padded row each)  %.4f s\n  packed, length buckets         %.4f s\n"
      "  packed, one call per sequence   %.4f s\n  packed, block-diagonal mask     %.4f s\n",
      static_cast<long long>(h), static_cast<long long>(hkv), static_cast<long long>(d),
      static_cast<long long>(samples), static_cast<long long>(mean), static_cast<long long>(b),
      static_cast<long long>(row), unpacked, per_seq, per_sequence, masked);
  return 0;
}
