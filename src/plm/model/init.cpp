#include "plm/model/init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace plm::model {
namespace {

// Parameters may be fp32 on any device; draw in fp32 on the CPU and copy in.
template <class Fill>
void fill(at::Tensor& t, Fill f) {
  at::NoGradGuard no_grad;
  at::Tensor cpu = at::empty(t.sizes(), at::kFloat);
  f(cpu);
  t.copy_(cpu);
}

void trunc_normal(at::Tensor& t, double std, double bound, const at::Generator& gen) {
  trunc_normal_(t, 0.0, std, -bound, bound, gen);
}

// PyTorch's nn.Linear / nn.Conv2d default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); bias U(+-1/sqrt(fan_in)).
void torch_default(at::Tensor& weight, at::Tensor* bias, int64_t fan_in, const at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  fill(weight, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen); });
  if (bias && bias->defined()) fill(*bias, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen); });
}

}  // namespace

void trunc_normal_(at::Tensor& t, double mean, double std, double a, double b, const at::Generator& gen) {
  // Same steps as torch.nn.init._no_grad_trunc_normal_.
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = norm_cdf((a - mean) / std), u = norm_cdf((b - mean) / std);
  fill(t, [&](at::Tensor& c) {
    c.uniform_(2 * l - 1, 2 * u - 1, gen).erfinv_().mul_(std * std::sqrt(2.0)).add_(mean).clamp_(a, b);
  });
}

void init_decoder(PerceptionLMImpl& m) {
  const at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(m.args.seed));
  const auto& d = m.dims;
  // PLM's LMTransformer.reset_parameters is called without an init_std: the embedding and output ignore
  // init_base_std (docs/reference.md 1.5); only the blocks use it.
  const double base = std::pow(static_cast<double>(d.dim), -0.5);
  fill(m.norm->weight, [](at::Tensor& c) { c.fill_(1.0); });
  trunc_normal(m.tok_embeddings, base, 3 * base, gen);
  if (m.output.defined()) trunc_normal(m.output, base, 3 * base, gen);
  for (int64_t depth = 0; depth < d.n_layers; ++depth) {
    const std::string& f = m.args.init_std_factor;
    const double factor = f == "current_depth"  ? std::sqrt(2.0 * (depth + 1))
                          : f == "global_depth" ? std::sqrt(2.0 * (d.n_layers + 1))
                          : f == "dim_ratio"    ? d.dim / 4096.0
                                                : 1.0;
    auto& block = *m.layers[depth]->as<TransformerBlockImpl>();
    const double attn_std = m.args.init_base_std.value_or(std::pow(static_cast<double>(d.dim), -0.5));
    for (auto* w : {&block.attention->wq->weight, &block.attention->wk->weight, &block.attention->wv->weight})
      trunc_normal(*w, attn_std, 3 * attn_std, gen);
    trunc_normal(block.attention->wo->weight, attn_std / factor, 3 * attn_std, gen);
    fill(block.attention_norm->weight, [](at::Tensor& c) { c.fill_(1.0); });
    const double in_std = m.args.init_base_std.value_or(std::pow(static_cast<double>(d.dim), -0.5));
    const double out_std = m.args.init_base_std.value_or(std::pow(static_cast<double>(d.hidden_dim), -0.5)) / factor;
    trunc_normal(block.feed_forward->w1->weight, in_std, 3 * in_std, gen);
    trunc_normal(block.feed_forward->w3->weight, in_std, 3 * in_std, gen);
    trunc_normal(block.feed_forward->w2->weight, out_std, 3 * out_std, gen);
    fill(block.ffn_norm->weight, [](at::Tensor& c) { c.fill_(1.0); });
  }
}

void init_projector(PerceptionLMImpl& m) {
  if (!m.vision_projector || m.args.mlp_init.no_init) return;
  const at::Generator gen = at::detail::getDefaultCPUGenerator();
  double std = 1.0 / std::sqrt(static_cast<double>(m.dims.dim));
  if (m.args.mlp_init.coeff_std) std *= *m.args.mlp_init.coeff_std;
  auto& p = *m.vision_projector;
  for (auto* t : {&p.linear_0->weight, &p.linear_0->bias, &p.linear_2->weight, &p.linear_2->bias}) {
    if (m.args.mlp_init.use_gaussian) {
      trunc_normal(*t, std, 3 * std, gen);
    } else {
      const double bound = std::sqrt(3.0) * std;
      fill(*t, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen); });
    }
  }
}

void init_vision(PerceptionLMImpl& m) {
  if (!m.vision_model) return;
  const at::Generator gen = at::detail::getDefaultCPUGenerator();
  auto& v = *m.vision_model;
  const auto& a = v.args;
  torch_default(v.conv1_weight, nullptr, 3 * a.patch_size * a.patch_size, gen);
  auto layer_norm = [](LayerNormImpl& ln) {
    fill(ln.weight, [](at::Tensor& c) { c.fill_(1.0); });
    fill(ln.bias, [](at::Tensor& c) { c.zero_(); });
  };
  if (v.ln_pre) layer_norm(*v.ln_pre);
  if (v.ln_post) layer_norm(*v.ln_post);
  for (const auto& module : *v.resblocks) {
    auto& b = *module->as<VisionBlockImpl>();
    layer_norm(*b.ln_1);
    layer_norm(*b.ln_2);
    const double xavier = std::sqrt(6.0 / static_cast<double>(a.width + 3 * a.width));  // fan_in + fan_out
    fill(b.attn->in_proj_weight, [&](at::Tensor& c) { c.uniform_(-xavier, xavier, gen); });
    fill(b.attn->in_proj_bias, [](at::Tensor& c) { c.zero_(); });
    torch_default(b.attn->out_proj->weight, nullptr, a.width, gen);
    fill(b.attn->out_proj->bias, [](at::Tensor& c) { c.zero_(); });
    torch_default(b.mlp->c_fc->weight, &b.mlp->c_fc->bias, a.width, gen);
    torch_default(b.mlp->c_proj->weight, &b.mlp->c_proj->bias, b.mlp->c_fc->weight.size(0), gen);
    for (auto* g : {&b.ls_1, &b.ls_2})
      if (g->defined()) fill(*g, [&](at::Tensor& c) { c.fill_(*a.ls_init_value); });
  }
  const double scale = std::pow(static_cast<double>(a.width), -0.5);
  if (v.class_embedding.defined()) fill(v.class_embedding, [&](at::Tensor& c) { c.normal_(0, 1, gen).mul_(scale); });
  if (v.positional_embedding.defined())
    fill(v.positional_embedding, [&](at::Tensor& c) { c.normal_(0, 1, gen).mul_(scale); });
}

void init_lora(PerceptionLMImpl& m) {
  if (!m.args.lora) return;
  const at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(m.args.seed + 1));
  for (auto& p : m.named_parameters()) {
    at::Tensor t = p.value();
    const std::string& name = p.key();
    if (!is_lora_parameter(name)) continue;
    if (name.find(".lora_A.") != std::string::npos)
      torch_default(t, nullptr, t.size(1), gen);
    else
      fill(t, [](at::Tensor& c) { c.zero_(); });
  }
}

void init_all(PerceptionLMImpl& m) {
  init_decoder(m);
  init_vision(m);
  init_projector(m);
  init_lora(m);
}

}  // namespace plm::model
