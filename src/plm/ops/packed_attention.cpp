// ops::packed_attention (ops.h): causal attention within the sequences packed into each row. CUDA with bf16/fp16:
// one variable-length flash-attention call over every row's sequences (cumulative offsets, no mask), with its own
// backward; elsewhere, one causal attention() per bucket of sequences of similar length, each padded at its end.
// A dense block-diagonal mask is never built.
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <set>

#include "plm/common/log.h"
#include "plm/ops/ops.h"

namespace plm::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// Every row's sequences as [start, length) spans of that row: the listed lengths, then the rest of the row.
std::vector<std::vector<std::pair<int64_t, int64_t>>> spans_of(const std::vector<std::vector<int64_t>>& lengths,
                                                               int64_t rows, int64_t seq) {
  TORCH_CHECK(static_cast<int64_t>(lengths.size()) == rows, "packed attention: ", lengths.size(),
              " rows of lengths for a batch of ", rows, " rows");
  std::vector<std::vector<std::pair<int64_t, int64_t>>> spans(static_cast<size_t>(rows));
  for (int64_t b = 0; b < rows; ++b) {
    int64_t at = 0;
    for (const int64_t n : lengths[static_cast<size_t>(b)]) {
      TORCH_CHECK(n >= 0 && at + n <= seq, "packed attention: row ", b, "'s sequences exceed its ", seq, " tokens");
      if (n > 0) spans[static_cast<size_t>(b)].emplace_back(at, n);
      at += n;
    }
    if (at < seq) spans[static_cast<size_t>(b)].emplace_back(at, seq - at);
  }
  return spans;
}

/// Flash attention over sequences laid end to end: q [T, H, D], k/v [T, Hkv, D], `offsets` int32 [n + 1] (the
/// sequences' cumulative starts), causal within each sequence. GQA is native to the kernel (query head h reads kv
/// head h / (H / Hkv), PLM's consecutive groups).
struct VarlenFlash : torch::autograd::Function<VarlenFlash> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& offsets, int64_t longest, double scale) {
    auto [out, lse, rng_state, unused, debug] =
        at::_flash_attention_forward(q, k, v, offsets, offsets, longest, longest, /*dropout_p=*/0.0, /*is_causal=*/true,
                                     /*return_debug_mask=*/false, scale);
    ctx->save_for_backward({q, k, v, out, lse, offsets, rng_state, unused});
    ctx->saved_data["longest"] = longest;
    ctx->saved_data["scale"] = scale;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const int64_t longest = ctx->saved_data["longest"].toInt();
    auto [dq, dk, dv] = at::_flash_attention_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[5],
                                                      longest, longest, /*dropout_p=*/0.0, /*is_causal=*/true, s[6],
                                                      s[7], ctx->saved_data["scale"].toDouble());
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

/// The CPU path below: a bucket of sequences spans lengths from its shortest to at most kBucketRatio times that; a
/// sequence whose attention is at least kAloneWork (length^2 x heads x head size) runs alone, unpadded, since
/// its compute outweighs a call's overhead. bench/packed_attention_bench.sh on 2 cores, forward + backward: demo
/// heads (4 x 16), 32 samples of ~45 tokens: buckets 0.0034 s vs one call per sequence 0.0068 s; PLM-1B heads
/// (32 x 64), 16 samples of ~150 tokens: alone 0.21 s vs buckets of 1.5x 0.35 s.
constexpr double kBucketRatio = 1.5;
constexpr int64_t kAloneWork = int64_t{1} << 22;

/// The inputs the variable-length flash kernel takes (ATen's flash constraints: CUDA, half types, head size a
/// multiple of 8 up to 256).
bool varlen_flash_applies(const at::Tensor& q) {
  const at::ScalarType t = q.scalar_type();
  return q.is_cuda() && (t == at::kBFloat16 || t == at::kHalf) && q.size(-1) % 8 == 0 && q.size(-1) <= 256;
}

void log_path_once(const at::Tensor& q, const char* path) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  const std::string key =
      fmt::format("{} {} head size {}", q.device().str(), c10::toString(q.scalar_type()), q.size(-1));
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!seen.insert(key).second) return;
  }
  log::info("packed attention ({}): {}", key, path);
}

}  // namespace

at::Tensor packed_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::vector<std::vector<int64_t>>& lengths, std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention expects [B, H, S, D] tensors");
  TORCH_CHECK(k.size(2) == q.size(2) && v.size(2) == q.size(2), "packed attention: keys and queries differ in length");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of key/value heads");
  const int64_t rows = q.size(0), seq = q.size(2);
  const auto spans = spans_of(lengths, rows, seq);
  if (varlen_flash_applies(q)) {
    log_path_once(q, "variable-length flash kernel");
    std::vector<int32_t> offsets{0};
    int64_t longest = 0;
    for (int64_t b = 0; b < rows; ++b)
      for (const auto& [start, n] : spans[static_cast<size_t>(b)]) {
        offsets.push_back(static_cast<int32_t>(b * seq + start + n));
        longest = std::max(longest, n);
      }
    const at::Tensor cu = at::tensor(offsets, at::kInt).to(q.device(), /*non_blocking=*/true);
    // [B, H, S, D] -> [B * S, H, D]: the rows end to end, each sequence a contiguous run of tokens.
    const auto flat = [](const at::Tensor& x) { return x.transpose(1, 2).flatten(0, 1).contiguous(); };
    const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
    const at::Tensor out = VarlenFlash::apply(flat(q), flat(k), flat(v), cu, longest, s);
    return out.unflatten(0, {rows, seq}).transpose(1, 2);
  }
  log_path_once(q, "causal attention over length buckets");
  // Every sequence is a view of the rows laid end to end ([B * S, H, D], one split_with_sizes). Sorted by length,
  // they are grouped into buckets whose longest is at most kBucketRatio x their shortest, a long one alone
  // (kAloneWork); a bucket is one causal attention() call over its sequences padded at their ends to its longest.
  // Causal attention never reads a later position, so the padding changes no real query's output. The outputs are
  // concatenated back in row order; backward allocates only bucket-sized pieces, never a whole row's gradient.
  std::vector<int64_t> sizes;
  for (const auto& row : spans)
    for (const auto& span : row) sizes.push_back(span.second);
  std::vector<size_t> order(sizes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] < sizes[b]; });
  const auto pieces = [&](const at::Tensor& x) { return x.transpose(1, 2).flatten(0, 1).split_with_sizes(sizes, 0); };
  const std::vector<at::Tensor> qs = pieces(q), ks = pieces(k), vs = pieces(v);
  const int64_t work_per_pair = q.size(1) * q.size(3);
  std::vector<at::Tensor> outs(sizes.size());
  for (size_t i = 0; i < order.size();) {
    const int64_t shortest = sizes[order[i]];
    size_t j = i + 1;
    if (shortest * shortest * work_per_pair < kAloneWork)
      while (j < order.size() && static_cast<double>(sizes[order[j]]) <= kBucketRatio * static_cast<double>(shortest))
        ++j;
    const int64_t longest = sizes[order[j - 1]];
    // [m, H, longest, D]: the bucket's sequences, each padded with zeros after its last token.
    const auto bucket = [&](const std::vector<at::Tensor>& x) {
      std::vector<at::Tensor> padded;  // constant_pad_nd + stack: at::pad_sequence's backward measured 2x slower
      for (size_t m = i; m < j; ++m)
        padded.push_back(at::constant_pad_nd(x[order[m]], {0, 0, 0, 0, 0, longest - sizes[order[m]]}));
      return at::stack(padded, 0).transpose(1, 2);
    };
    // unbind, not one select per sequence: each select's backward would zero-fill the whole bucket's gradient.
    const std::vector<at::Tensor> out =
        attention(bucket(qs), bucket(ks), bucket(vs), /*causal=*/true, scale).transpose(1, 2).unbind(0);
    for (size_t m = i; m < j; ++m) outs[order[m]] = out[m - i].narrow(0, 0, sizes[order[m]]);
    i = j;
  }
  return at::cat(outs, 0).unflatten(0, {rows, seq}).transpose(1, 2);
}

}  // namespace plm::ops
