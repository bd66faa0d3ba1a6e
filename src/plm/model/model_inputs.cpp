#include "plm/model/model_inputs.h"

#include "plm/common/counter_hash.h"
#include "plm/data/collate.h"
#include "plm/model/perception_lm.h"

namespace plm::model {

ModelInputs model_inputs(const PerceptionLMImpl& model, const data::Batch& batch, at::Device device) {
  ModelInputs in;
  // non_blocking: a host-to-device copy that would otherwise wait for the device's queue to drain first.
  in.tokens = batch.input_ids.to(device, /*non_blocking=*/true);
  if (batch.packed()) {
    in.positions = batch.positions.to(device, /*non_blocking=*/true);
    in.segments = batch.segments;
  }
  if (model.vision_model && batch.images.defined()) {
    in.images = batch.images.to(device, /*non_blocking=*/true);
    in.image_mask = batch.image_pos_index >= 0;
    in.chunk_has_text = batch.chunk_has_text;
  }
  return in;
}

std::vector<uint64_t> drop_path_keys(const data::Batch& batch, uint64_t seed, int64_t step) {
  TORCH_CHECK(batch.slots.size() == batch.num_chunks.size(), "drop_path_keys: the batch has no stream slots");
  const uint64_t per_step = counter_hash(seed, static_cast<uint64_t>(step), 0x44726f7050617468ULL);  // "DropPath"
  std::vector<uint64_t> keys;
  for (size_t b = 0; b < batch.num_chunks.size(); ++b)
    for (int64_t k = 0; k < batch.num_chunks[b]; ++k)
      keys.push_back(counter_hash(per_step, static_cast<uint64_t>(batch.slots[b]), static_cast<uint64_t>(k)));
  return keys;
}

std::vector<uint64_t> row_keys(const data::Batch& batch, uint64_t seed, int64_t step) {
  const int64_t rows = batch.input_ids.size(0);
  TORCH_CHECK(batch.slots.size() == batch.sample_ids.size() && !batch.slots.empty(),
              "row_keys: the batch has no stream slots");
  TORCH_CHECK(batch.packed() ? static_cast<int64_t>(batch.segments.size()) == rows
                             : static_cast<int64_t>(batch.slots.size()) == rows,
              "row_keys: the batch's rows and samples disagree");
  const uint64_t per_step = counter_hash(seed, static_cast<uint64_t>(step), 0x4c6f524144726f70ULL);  // "LoRADrop"
  std::vector<uint64_t> keys;
  size_t sample = 0;
  for (int64_t r = 0; r < rows; ++r) {  // a packed row: a hash of its samples' slots, in order
    const size_t n = batch.packed() ? batch.segments[r].size() : 1;
    uint64_t key = per_step;
    for (size_t k = 0; k < n; ++k, ++sample) key = counter_hash(key, static_cast<uint64_t>(batch.slots[sample]), k);
    keys.push_back(key);
  }
  return keys;
}

}  // namespace plm::model
