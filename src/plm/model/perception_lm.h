// PLM: Perception Encoder -> projector -> vision features written over the <|image|> positions of a Llama 3 decoder
// (docs/reference.md 1.1, 2). Parameter names are exactly those of PLM's consolidated.pth (docs/reference.md 1.6),
// minus the tied-embedding duplicate `output.tied_module.weight` (the checkpoint code writes and skips it).
#pragma once

#include <torch/nn/modules/container/modulelist.h>

#include <functional>
#include <vector>

#include "plm/config/args.h"
#include "plm/model/decoder.h"
#include "plm/model/model_inputs.h"
#include "plm/model/projector.h"
#include "plm/model/units.h"
#include "plm/model/vision.h"

namespace plm::model {

/// The Perception Language Model: the token embedding, the Perception Encoder and projector (when the config has a
/// vision model), the Llama 3 decoder blocks, the final norm and the output layer, as one torch::nn::Module whose
/// parameter names are PLM's. Every parameterised step runs as a unit (model/units.h), so that activation
/// checkpointing and sharding apply to training and generation alike.
struct PerceptionLMImpl : torch::nn::Module {
  /// Builds every parameter uninitialised with `options` (use the meta device to get shapes without memory);
  /// model/init.h initialises them and ckpt/ loads them.
  explicit PerceptionLMImpl(const config::ModelArgs& args, const at::TensorOptions& options = {});

  /// The decoder's input [B, S, dim]: token embeddings with the projected vision vectors written over the
  /// positions of `image_mask` (row-major). Throws c10::Error when the number of image positions differs from the
  /// number of vision vectors.
  at::Tensor embed(const ModelInputs& in) const;

  /// Final-normed hidden states [B, S, dim]: embeddings, vision tokens stitched in, causal decoder, `norm`.
  /// Throws c10::Error when the number of image positions differs from the number of vision vectors.
  at::Tensor hidden(const ModelInputs& in) const;

  /// The decoder stack on one cached step of generation (infer/generate.h): x [B, S, dim] (embed()'s output for the
  /// step's tokens) through every block's cached attention (TransformerBlockImpl::forward_cached), which reads and
  /// extends `cache` (one KVCacheLayer per block), then `norm`. Returns hidden states [B, S, dim]; the caller
  /// applies the output layer only where it needs logits. Call under at::InferenceMode.
  at::Tensor hidden_cached(const at::Tensor& x, const CachedStep& step, std::vector<KVCacheLayer>& cache) const;

  /// Logits [B, S, vocab] (in the compute dtype).
  at::Tensor forward(const ModelInputs& in) const;

  /// The output layer applied to final-normed hidden states [..., dim] -> [..., vocab].
  at::Tensor output_layer(const at::Tensor& h) const;

  /// PLM's training loss: fp32 cross-entropy of `targets` [B, S] at the positions where `loss_mask` [B, S] is true,
  /// mean over those positions. Only those positions go through the output layer, and they go in chunks
  /// (ops::linear_cross_entropy): the same values as cross_entropy(forward()), without the [tokens, vocab] logits.
  /// `targets` and `loss_mask` may live on the host (the trainer keeps them there, so finding the positions does
  /// not wait for the device).
  at::Tensor loss(const ModelInputs& in, const at::Tensor& targets, const at::Tensor& loss_mask) const;

  /// The output layer: `output.weight`, or the token embedding when weights are tied.
  const at::Tensor& output_weight() const { return output.defined() ? output : tok_embeddings; }
  /// The unit (model/units.h) holding output_weight().
  const char* output_unit() const { return output.defined() ? "output" : "tok_embeddings"; }

  /// PLM's freezing (apps/plm/transformer.py train()): vision_model.* trains unless freeze_vision_model,
  /// vision_projector.* always trains, everything else unless freeze_language_model. With model.lora only the
  /// adapters train.
  void apply_freezing();

  /// LoRA adapters (model/lora.h) on every linear that `lora.targets` names; the constructor calls it when
  /// args.lora is set. Throws config::ConfigError naming model.lora.targets for a pattern that matches nothing.
  void add_lora(const config::LoraArgs& lora);

  /// Full activation checkpointing of every decoder block and vision block (model/activation_checkpoint.h).
  void set_activation_checkpointing(bool on);

  /// Runs every unit (model/units.h) through `runner` from now on (nullptr: plainly again). The sharded trainer
  /// installs one that gathers each unit's parameters before it runs and frees them afterwards.
  void set_unit_runner(std::shared_ptr<UnitRunner> runner);

  /// The one walk over the decoder blocks, shared by training (hidden) and generation (hidden_cached): each block
  /// runs as its unit (model/units.h) the computation `block_step(block, index, x)`, then the final `norm`.
  using BlockStep = std::function<at::Tensor(const TransformerBlockImpl&, size_t, const at::Tensor&)>;
  at::Tensor decoder_stack(at::Tensor h, const BlockStep& block_step, bool checkpoint) const;

  config::ModelArgs args;
  DecoderDims dims;
  bool activation_checkpointing = false;
  std::shared_ptr<UnitRunner> unit_runner;
  at::Tensor tok_embeddings;  // "tok_embeddings.weight" [vocab, dim]
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  at::Tensor output;  // "output.weight" [vocab, dim]; undefined when tied
  PerceptionEncoder vision_model{nullptr};
  Projector vision_projector{nullptr};
  at::Tensor rope_frequencies;  // fp32 [head_dim / 2], not a parameter
};
TORCH_MODULE(PerceptionLM);

}  // namespace plm::model

namespace plm::model {

/// Parameter counts by part (tied weights counted once).
struct ParameterCounts {
  int64_t decoder = 0, vision = 0, projector = 0, adapters = 0, total = 0, trainable = 0;  // adapters: LoRA's
};

/// Counts `model`'s parameters; `trainable` follows requires_grad (call apply_freezing() in train mode first).
ParameterCounts count_parameters(const PerceptionLMImpl& model);

}  // namespace plm::model
