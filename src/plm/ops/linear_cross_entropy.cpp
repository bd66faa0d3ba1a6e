// ops::linear_cross_entropy (ops.h): the output layer and PLM's cross-entropy in chunks of tokens, with an explicit
// backward that recomputes each chunk's logits instead of keeping them.
#include <torch/csrc/autograd/custom_function.h>

#include "plm/ops/ops.h"

namespace plm::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Chunks {
  int64_t n, size;
  int64_t end(int64_t start) const { return std::min(n, start + size); }
};

Chunks chunks_of(const at::Tensor& h, const at::Tensor& weight, int64_t chunk_tokens) {
  const int64_t size = chunk_tokens > 0 ? chunk_tokens : std::max<int64_t>(1, kLogitsPerChunk / weight.size(0));
  return {h.size(0), size};
}

/// The loss is -log softmax(logits)[target] = lse - logits[target], summed over tokens and divided by their count.
struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk_tokens) {
    const at::ScalarType acc = at::promote_types(h.scalar_type(), at::kFloat);
    const Chunks c = chunks_of(h, weight, chunk_tokens);
    at::Tensor lse = at::empty({c.n}, h.options().dtype(acc));
    at::Tensor total = at::zeros({}, h.options().dtype(acc));
    for (int64_t s = 0; s < c.n; s += c.size) {
      const int64_t e = c.end(s);
      const at::Tensor logits = at::linear(h.slice(0, s, e), weight).to(acc);
      const at::Tensor chunk_lse = at::logsumexp(logits, {-1});
      lse.slice(0, s, e).copy_(chunk_lse);
      total.add_((chunk_lse - logits.gather(1, targets.slice(0, s, e).unsqueeze(1)).squeeze(1)).sum());
    }
    ctx->save_for_backward({h, weight, targets, lse});
    ctx->saved_data["chunk_tokens"] = c.size;
    return total / static_cast<double>(c.n);  // 0 / 0 = NaN for no tokens, as nll_loss's mean
  }

  // d loss / d logits = (softmax(logits) - onehot(target)) * g / N, per chunk; then dh = dlogits W, dW += dlogits^T h.
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const Chunks c = chunks_of(h, weight, ctx->saved_data["chunk_tokens"].toInt());
    const at::ScalarType acc = lse.scalar_type();
    const at::Tensor g = grad_out[0].to(acc) / static_cast<double>(std::max<int64_t>(c.n, 1));
    const bool want_h = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    at::Tensor dh = want_h ? at::empty_like(h) : at::Tensor();
    // The weight gradient sums over chunks in at least fp32 (one bf16 rounding at the end, as the plain path's).
    const at::ScalarType w_acc = at::promote_types(weight.scalar_type(), at::kFloat);
    at::Tensor dw = want_w ? at::zeros(weight.sizes(), weight.options().dtype(w_acc)) : at::Tensor();
    for (int64_t s = 0; s < c.n && (want_h || want_w); s += c.size) {
      const int64_t e = c.end(s);
      const at::Tensor hc = h.slice(0, s, e);
      at::Tensor p = at::linear(hc, weight).to(acc).sub_(lse.slice(0, s, e).unsqueeze(1)).exp_();
      p.scatter_add_(1, targets.slice(0, s, e).unsqueeze(1), at::full({e - s, 1}, -1.0, p.options()));
      const at::Tensor dlogits = p.mul_(g).to(h.scalar_type());
      if (want_h) {
        at::Tensor rows = dh.slice(0, s, e);
        at::mm_out(rows, dlogits, weight);
      }
      if (want_w) {
        if (w_acc == weight.scalar_type())
          dw.addmm_(dlogits.t(), hc);
        else
          dw.add_(at::mm(dlogits.t(), hc));
      }
    }
    if (want_w && w_acc != weight.scalar_type()) dw = dw.to(weight.scalar_type());
    return {dh, dw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_tokens) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1),
              "linear_cross_entropy expects h [N, D] and weight [V, D]");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0) && targets.scalar_type() == at::kLong,
              "linear_cross_entropy expects int64 targets [N]");
  return LinearCrossEntropy::apply(h, weight, targets, chunk_tokens);
}

}  // namespace plm::ops
