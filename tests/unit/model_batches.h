// Random model inputs shared by the model's unit tests.
#pragma once

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
