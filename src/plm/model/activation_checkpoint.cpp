#include "plm/model/activation_checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace plm::model {
namespace {

/// Keeps the block alive in the autograd graph until backward has run.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(Block b) : block(std::move(b)) {}
  Block block;
};

struct Checkpoint : torch::autograd::Function<Checkpoint> {
  // `params` only tell autograd that the output depends on them (their gradients come from the re-entrant backward).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const Block& block,
                            at::TensorList params) {
    ctx->save_for_backward({x});
    ctx->saved_data["n_params"] = static_cast<int64_t>(params.size());
    ctx->saved_data["block"] = c10::IValue::make_capsule(c10::make_intrusive<BlockHolder>(block));
    at::NoGradGuard no_grad;
    return block(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const auto holder = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    at::Tensor input = x.detach().requires_grad_(x.requires_grad());
    at::Tensor y;
    {
      at::AutoGradMode grad_mode(true);
      y = holder->block(input);
    }
    // Re-entrant backward: parameter gradients accumulate into their .grad, the input's into input.grad.
    if (y.requires_grad()) torch::autograd::backward({y}, {grad_out[0]});
    torch::autograd::variable_list grads(2 + ctx->saved_data["n_params"].toInt());
    grads[0] = input.requires_grad() ? input.grad() : at::Tensor();
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed(const Block& block, const at::Tensor& x, const std::vector<at::Tensor>& params) {
  if (!at::GradMode::is_enabled()) return block(x);
  return Checkpoint::apply(x, block, at::TensorList(params));
}

}  // namespace plm::model
