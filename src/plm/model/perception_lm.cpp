#include "plm/model/perception_lm.h"

#include "plm/config/source.h"
#include "plm/model/units.h"
#include "plm/ops/ops.h"

namespace plm::model {

namespace {

/// The flat row-major indices where `mask` is true, found on the mask's own device (the host, for model_inputs'
/// masks: no wait for the device) and then sent to `like`'s device.
at::Tensor positions_on(const at::Tensor& mask, const at::Tensor& like) {
  return mask.flatten().nonzero().squeeze(1).to(like.device(), /*non_blocking=*/true);
}

}  // namespace

PerceptionLMImpl::PerceptionLMImpl(const config::ModelArgs& a, const at::TensorOptions& o)
    : args(a), dims(decoder_dims(a)) {
  const at::TensorOptions opts = o.has_dtype() ? o : o.dtype(at::kFloat);
  tok_embeddings = register_module("tok_embeddings", std::make_shared<torch::nn::Module>())
                       ->register_parameter("weight", at::empty({dims.vocab_size, dims.dim}, opts));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < dims.n_layers; ++i) layers->push_back(TransformerBlock(dims, a.norm_eps, opts));
  norm = register_module("norm", RMSNorm(dims.dim, a.norm_eps, opts));
  if (!a.weight_tying)
    output = register_module("output", std::make_shared<torch::nn::Module>())
                 ->register_parameter("weight", at::empty({dims.vocab_size, dims.dim}, opts));
  if (a.vision_model) {
    vision_model = register_module("vision_model", PerceptionEncoder(*a.vision_model, opts));
    vision_projector =
        register_module("vision_projector", Projector(a.vision_model->width, dims.dim, a.pooling_ratio, opts));
  }
  rope_frequencies = decoder_frequencies(a, dims.head_dim);
  if (a.lora) add_lora(*a.lora);
}

void PerceptionLMImpl::add_lora(const config::LoraArgs& lora) {
  const std::vector<std::string> patterns = lora_target_patterns(lora.targets);
  const double scale = lora.alpha / static_cast<double>(lora.rank);
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> targets;  // collected, then changed
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (std::dynamic_pointer_cast<LinearImpl>(item.value()) && is_lora_target(item.key(), patterns))
      targets.emplace_back(item.key(), item.value());
    if (std::dynamic_pointer_cast<VisionAttentionImpl>(item.value()) &&
        is_lora_target(item.key() + ".in_proj", patterns))
      targets.emplace_back(item.key() + ".in_proj", item.value());
  }
  for (const std::string& p : patterns) {
    bool used = false;
    for (const auto& t : targets) used = used || is_lora_target(t.first, {p});
    if (!used)
      throw config::ConfigError("model.lora.targets: '" + p +
                                "' matches no linear of the model (names are like layers.0.attention.wq, "
                                "layers.0.feed_forward.w1, vision_model.transformer.resblocks.0.attn.in_proj, "
                                "...attn.out_proj, ...mlp.c_fc, ...mlp.c_proj, vision_projector.projector.0).");
  }
  for (const auto& [name, module] : targets) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(module))
      linear->add_lora(lora.rank, scale, lora.dropout);
    else
      std::dynamic_pointer_cast<VisionAttentionImpl>(module)->add_in_proj_lora(lora.rank, scale, lora.dropout);
  }
}

at::Tensor PerceptionLMImpl::embed(const ModelInputs& in) const {
  UnitRunner* runner = unit_runner.get();
  const at::Tensor embedding = tok_embeddings;  // a handle: a runner may swap the data under it
  at::Tensor h = run_unit(
      runner, "tok_embeddings", [embedding](const at::Tensor& t) { return at::embedding(embedding, t); }, in.tokens);
  if (in.images.defined() && vision_model) {
    const Projector projector = vision_projector;
    at::Tensor vision = run_unit(
        runner, "vision_projector",
        [projector, keys = in.drop_path_keys](const at::Tensor& x) {
          LoraDropoutScope scope(keys, LoraDropoutScope::kProjector);
          return projector->forward(x);
        },
        vision_model->forward(in.images.to(h.scalar_type()), in.drop_path_keys));
    if (in.chunk_has_text.defined()) vision = vision.index_select(0, positions_on(in.chunk_has_text.logical_not(), h));
    const at::Tensor vectors = vision.flatten(0, 1).to(h.scalar_type());
    const at::Tensor slots = positions_on(in.image_mask, h);
    TORCH_CHECK(slots.size(0) == vectors.size(0), "the batch has ", slots.size(0),
                " image-token positions but the vision tower produced ", vectors.size(0),
                " vectors; each <|image|> run must match its media's tiles/frames x tokens per chunk");
    h = h.flatten(0, 1).index_copy(0, slots, vectors).view_as(h);  // out of place: no gradient to the placeholders
  }
  return h;
}

at::Tensor PerceptionLMImpl::decoder_stack(at::Tensor h, const BlockStep& block_step, bool checkpoint) const {
  UnitRunner* runner = unit_runner.get();
  for (size_t i = 0; i < layers->size(); ++i) {
    const auto* block = layers->ptr(i)->as<TransformerBlockImpl>();
    // By value: the unit may run again in backward (activation checkpointing, sharding), after this returns.
    h = run_unit(
        runner, "layers." + std::to_string(i),
        [block, block_step, i](const at::Tensor& x) { return block_step(*block, i, x); }, h, checkpoint,
        block->parameters());
  }
  const RMSNorm final_norm = norm;
  return run_unit(
      runner, "norm", [final_norm](const at::Tensor& x) { return final_norm->forward(x); }, h);
}

at::Tensor PerceptionLMImpl::hidden(const ModelInputs& in) const {
  at::Tensor h = embed(in);
  const RopeTable rope = decoder_rope(rope_frequencies.to(h.device()), h.size(1));
  const TokenLayout layout =
      in.segments.empty() ? TokenLayout::rows(rope, h.size(1)) : TokenLayout::packed(rope, in.positions, in.segments);
  return decoder_stack(
      h,
      [layout, keys = in.row_keys](const TransformerBlockImpl& block, size_t i, const at::Tensor& x) {
        LoraDropoutScope scope(keys, i);
        return block.forward(x, layout);
      },
      activation_checkpointing);
}

at::Tensor PerceptionLMImpl::hidden_cached(const at::Tensor& x, const CachedStep& step,
                                           std::vector<KVCacheLayer>& cache) const {
  TORCH_CHECK(cache.size() == layers->size(), "the KV cache has ", cache.size(), " layers, the decoder ",
              layers->size());
  KVCacheLayer* layer_cache = cache.data();
  return decoder_stack(
      x,
      [&step, layer_cache](const TransformerBlockImpl& block, size_t i, const at::Tensor& h) {
        return block.forward_cached(h, step, layer_cache[i]);
      },
      false);
}

at::Tensor PerceptionLMImpl::output_layer(const at::Tensor& h) const {
  const at::Tensor weight = output_weight();
  return run_unit(
      unit_runner.get(), output_unit(), [weight](const at::Tensor& x) { return at::linear(x, weight); }, h);
}

at::Tensor PerceptionLMImpl::forward(const ModelInputs& in) const {
  return output_layer(hidden(in));
}

at::Tensor PerceptionLMImpl::loss(const ModelInputs& in, const at::Tensor& targets, const at::Tensor& loss_mask) const {
  const at::Tensor positions = loss_mask.flatten().nonzero().squeeze(1);  // where the mask lives: no device wait
  const at::Tensor loss_targets =
      targets.flatten().index_select(0, positions.to(targets.device())).to(in.tokens.device(), /*non_blocking=*/true);
  const at::Tensor all = hidden(in);
  const at::Tensor h = all.flatten(0, 1).index_select(0, positions.to(all.device(), /*non_blocking=*/true));
  const at::Tensor weight = output_weight();
  return run_unit(
      unit_runner.get(), output_unit(),
      [weight, loss_targets](const at::Tensor& x) { return ops::linear_cross_entropy(x, weight, loss_targets); }, h);
}

void PerceptionLMImpl::set_unit_runner(std::shared_ptr<UnitRunner> runner) {
  unit_runner = runner;
  if (vision_model) vision_model->unit_runner = std::move(runner);
}

void PerceptionLMImpl::set_activation_checkpointing(bool on) {
  activation_checkpointing = on;
  if (vision_model) vision_model->activation_checkpointing = on;
}

void PerceptionLMImpl::apply_freezing() {
  const bool training = is_training();
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    bool trainable = !args.freeze_language_model;
    if (name.find("vision_model") != std::string::npos) trainable = !args.freeze_vision_model;
    if (name.find("vision_projector") != std::string::npos) trainable = true;
    if (args.lora) trainable = is_lora_parameter(name);  // LoRA: only the adapters train
    p.value().set_requires_grad(training && trainable);
  }
}

}  // namespace plm::model

namespace plm::model {

ParameterCounts count_parameters(const PerceptionLMImpl& model) {
  ParameterCounts c;
  for (const auto& p : model.named_parameters()) {
    const int64_t n = p.value().numel();
    const std::string& name = p.key();
    if (is_lora_parameter(name))
      c.adapters += n;
    else if (name.rfind("vision_model.", 0) == 0)
      c.vision += n;
    else if (name.rfind("vision_projector.", 0) == 0)
      c.projector += n;
    else
      c.decoder += n;
    c.total += n;
    if (p.value().requires_grad()) c.trainable += n;
  }
  return c;
}

}  // namespace plm::model
