// Full activation checkpointing (docs/reference.md 5.4: every decoder TransformerBlock and every PE resblock): a
// block's forward runs without recording autograd and keeps only its input; backward runs the block again with autograd
// on and back-propagates through that recomputation, as torch.utils.checkpoint (reentrant) does.
//
// The recomputation must give the same activations: the block may not draw random numbers itself. PLM's only random
// op, DropPath, has its masks drawn outside the blocks (model/vision.h DropPathMasks) and captured by `block`, so
// no RNG state needs to be replayed.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace plm::model {

using Block = std::function<at::Tensor(const at::Tensor&)>;

/// block(x), storing only x for backward. Gradients reach x and every tensor `block` uses that requires grad
/// (accumulated into their .grad), with the same values as without checkpointing. `params` are the block's
/// parameters: the output requires grad when x or any of them does. Outside grad mode this is just block(x).
at::Tensor checkpointed(const Block& block, const at::Tensor& x, const std::vector<at::Tensor>& params);

}  // namespace plm::model
