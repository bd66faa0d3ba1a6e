// Random model inputs shared by the model's unit tests.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "plm/model/model_inputs.h"
#include "plm/model/perception_lm.h"

/// Two rows of `seqlen` random tokens (ids below 1000) and one random image each, whose tokens sit at positions
/// first_image .. first_image + tokens per image - 1 of both rows.
inline plm::model::ModelInputs text_and_image_batch(const plm::model::PerceptionLMImpl& m, int64_t seqlen,
                                                    int64_t first_image) {
  const auto& v = *m.args.vision_model;
  const int64_t grid = v.image_size / v.patch_size / m.args.pooling_ratio;
  plm::model::ModelInputs in;
  in.tokens = at::randint(0, 1000, {2, seqlen}, at::kLong);
  in.images = at::randn({2, 3, v.image_size, v.image_size});
  in.image_mask = at::zeros({2, seqlen}, at::kBool);
  in.image_mask.slice(1, first_image, first_image + grid * grid).fill_(true);
  return in;
}

/// The loss of `in` and every parameter's gradient (cloned, by name), with activation checkpointing `ac`; the global
/// generator is seeded with 11 first, so that DropPath draws the same masks every call.
inline std::pair<double, std::map<std::string, at::Tensor>> loss_and_gradients(plm::model::PerceptionLMImpl& m,
                                                                               const plm::model::ModelInputs& in,
                                                                               const at::Tensor& targets,
                                                                               const at::Tensor& mask, bool ac) {
  m.set_activation_checkpointing(ac);
  m.zero_grad();
  at::manual_seed(11);
  const at::Tensor loss = m.loss(in, targets, mask);
  loss.backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : m.named_parameters())
    if (p.value().grad().defined()) grads[p.key()] = p.value().grad().clone();
  return {loss.item<double>(), grads};
}
