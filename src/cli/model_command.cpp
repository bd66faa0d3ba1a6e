#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "plm/ckpt/model_checkpoint.h"
#include "plm/ckpt/safetensors.h"
#include "plm/common/runtime.h"
#include "plm/config/load.h"
#include "plm/model/perception_lm.h"
#include "plm/text/tokenizer.h"

namespace plm::cli {
namespace {

struct ModelOptions {
  std::string source;
  std::vector<std::string> overrides;
  std::string ckpt, inputs, out, dtype = "fp32";
  int64_t image_token_id = 128002;
  bool backward = false;
};

std::string grouped(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

int info(const ModelOptions& o) {
  const std::string ext = std::filesystem::path(o.source).extension().string();
  const bool yaml = ext == ".yaml" || ext == ".yml";
  config::ModelArgs args;
  if (yaml) {
    const config::TrainArgs train = config::load_config(o.source, o.overrides).args;
    args = train.model;
    if (args.vocab_size == -1) {  // the tokenizer's size, as plm train fills it
      if (!train.data.tokenizer_path)
        throw config::ConfigError(o.source +
                                  ": model.vocab_size is -1 (the tokenizer's size) but data.tokenizer_path "
                                  "is not set.");
      args.vocab_size = text::load_tokenizer(*train.data.tokenizer_path)->vocab_size();
    }
  } else {
    args = ckpt::read_model_args(o.source);
  }
  // The meta device gives every shape without allocating: an 8B model costs nothing here.
  model::PerceptionLM m(args, at::TensorOptions().device(at::kMeta));
  m->train();
  m->apply_freezing();
  const auto c = model::count_parameters(*m);
  const auto& d = m->dims;
  std::cout << "decoder     " << grouped(c.decoder) << "  (" << d.n_layers << " layers, dim " << d.dim << ", heads "
            << d.n_heads << "/" << d.n_kv_heads << " x " << d.head_dim << ", ffn " << d.hidden_dim << ", vocab "
            << d.vocab_size << (args.weight_tying ? ", tied output" : ", untied output") << ")\n";
  if (args.vision_model) {
    const auto& v = *args.vision_model;
    std::cout << "vision      " << grouped(c.vision) << "  (" << v.layers << " blocks, width " << v.width << ", heads "
              << v.heads << ", mlp "
              << m->vision_model->resblocks->ptr(0)->named_parameters()["mlp.c_fc.weight"].size(0) << ", patch "
              << v.patch_size << ", image " << v.image_size << (v.use_cls_token ? ", CLS" : "") << ")\n";
    std::cout << "projector   " << grouped(c.projector) << "  (pooling ratio " << args.pooling_ratio << ")\n";
  }
  if (args.lora)
    std::cout << "adapters    " << grouped(c.adapters) << "  (LoRA rank " << args.lora->rank << ", alpha "
              << args.lora->alpha << ", targets " << args.lora->targets << ")\n";
  std::cout << "total       " << grouped(c.total) << "\n";
  std::cout << "trainable   " << grouped(c.trainable);
  if (args.lora)
    std::cout << "  (LoRA: the adapters only)\n";
  else
    std::cout << "  (freeze_language_model=" << (args.freeze_language_model ? "true" : "false")
              << ", freeze_vision_model=" << (args.freeze_vision_model ? "true" : "false") << ")\n";
  return 0;
}

// Runs the model on a safetensors file of inputs; writes logits (and, with --backward, the loss and every
// parameter's gradient) to another: the tool for comparing against another implementation.
int forward(const ModelOptions& o) {
  {
    runtime::configure_threads();
    runtime::log_summary();
    ckpt::LoadReport report;
    model::PerceptionLM m = ckpt::load_model(o.ckpt, &report);
    m->eval();
    if (o.dtype == "bf16") m->to(at::kBFloat16);
    const ckpt::TensorMap in = ckpt::read_safetensors(o.inputs);
    model::ModelInputs batch;
    auto input = [&](const char* name) -> const at::Tensor& {
      if (const at::Tensor* t = in.find(name)) return *t;
      throw ckpt::CheckpointError("inputs '" + o.inputs + "' have no tensor '" + name + "'.");
    };
    batch.tokens = input("input_ids").to(at::kLong);
    const int64_t max_seqlen = m->args.max_seqlen;
    if (batch.tokens.dim() != 2 || batch.tokens.size(1) > max_seqlen)
      throw ckpt::CheckpointError("inputs '" + o.inputs + "': input_ids must be [batch, length] with length at most " +
                                  "the model's max_seqlen " + std::to_string(max_seqlen) + ", got " +
                                  c10::str(batch.tokens.sizes()) + ".");
    batch.image_mask = batch.tokens == o.image_token_id;
    if (const at::Tensor* pixels = in.find("pixel_values")) batch.images = *pixels;
    ckpt::TensorMap out;
    if (o.backward) {
      for (auto& p : m->parameters()) p.set_requires_grad(true);
      const at::Tensor loss = m->loss(batch, input("target").to(at::kLong), input("loss_mask").to(at::kBool));
      loss.backward();
      out.insert("loss", loss.detach().reshape({1}).to(at::kFloat));
      for (const auto& p : m->named_parameters()) out.insert("grad." + p.key(), p.value().grad().to(at::kFloat));
    }
    {
      at::NoGradGuard no_grad;
      out.insert("logits", m->forward(batch).to(at::kFloat));
    }
    ckpt::write_safetensors(out, o.out);
    std::cerr << "loaded " << report.loaded.size() << " tensors from " << o.ckpt << "; wrote " << out.size()
              << " tensors to " << o.out << "\n";
    return 0;
  }
}

}  // namespace

void add_model_command(CLI::App& app, int& exit_code) {
  auto* model = app.add_subcommand("model", "Inspect and run PLM models");
  model->require_subcommand(1);
  auto o = std::make_shared<ModelOptions>();
  auto* info_cmd = model->add_subcommand(
      "info", "Parameter counts (total, decoder, vision, projector, trainable under the config's freezing)");
  info_cmd
      ->add_option("config", o->source, "a model config or recipe YAML, or a checkpoint (params.json / config.json)")
      ->required()
      ->check(CLI::ExistingPath);
  info_cmd->add_option("overrides", o->overrides, "key.path=value overrides");
  info_cmd->callback([o, &exit_code] { exit_code = report_errors([&] { return info(*o); }); });

  auto* fwd = model->add_subcommand("forward", "Run a checkpoint on saved inputs and save the logits (and gradients)");
  fwd->add_option("--ckpt", o->ckpt, "PLM folder/file or Hugging Face PerceptionLM folder")->required();
  fwd->add_option("--inputs", o->inputs, "safetensors: input_ids int64 [B,S], optional pixel_values [N,3,H,W]")
      ->required()
      ->check(CLI::ExistingFile);
  fwd->add_option("--out", o->out, "safetensors to write: logits fp32 [B,S,V]")->required();
  fwd->add_option("--dtype", o->dtype, "parameter and compute dtype")->check(CLI::IsMember({"fp32", "bf16"}));
  fwd->add_option("--image-token-id", o->image_token_id, "the id whose positions receive vision vectors");
  fwd->add_flag("--backward", o->backward,
                "also write `loss` (CE of inputs' target at loss_mask) and `grad.<name>` of every parameter");
  fwd->callback([o, &exit_code] { exit_code = report_errors([&] { return forward(*o); }); });
}

}  // namespace plm::cli
