#include "plm/model/model_inputs.h"

#include "plm/data/collate.h"
#include "plm/model/perception_lm.h"

namespace plm::model {

ModelInputs model_inputs(const PerceptionLMImpl& model, const data::Batch& batch, at::Device device) {
  ModelInputs in;
  in.tokens = batch.input_ids.to(device);
  if (model.vision_model && batch.images.defined()) {
    in.images = batch.images.to(device);
    in.image_mask = (batch.image_pos_index >= 0).to(device);
    in.chunk_has_text = batch.chunk_has_text.to(device);
  }
  return in;
}

}  // namespace plm::model
