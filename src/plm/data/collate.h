// Batching processed samples exactly as PLM's MllmPaddingCollator (docs/reference.md 3.3).
#pragma once

#include <ATen/ATen.h>

#include "plm/data/preprocess.h"

namespace plm::data {

/// A batch of B samples of length L (model.max_seqlen, or the longest sample with pad_to_longest).
struct Batch {
  at::Tensor input_ids;        // int64 [B, L]: text[:-1], padded with pad_id
  at::Tensor labels;           // int64 [B, L]: labels[j-1] = text[j] at response positions j, else pad_id
  at::Tensor loss_mask;        // bool [B, L]: where labels are targets
  at::Tensor image_pos_index;  // int64 [B, L]: 0..n-1 at a sample's image-token positions, else -1
  at::Tensor images;           // float32 [sum of chunks, 3, S, S]: every sample's media in order (text: placeholder)
  at::Tensor chunk_has_text;   // bool [sum of chunks]: chunks of text-only samples (dropped after the vision tower)
  std::vector<std::string> media_type;
  std::vector<int64_t> num_chunks;
  std::vector<std::string> sample_ids;  // ProcessedSample::id of each row
  std::vector<int64_t> slots;           // ProcessedSample::slot of each row: its global index in the sample stream
};

/// Collates; `pad_id` replaces every unset input and label (PLM: 128001, <|end_of_text|>). A sample longer than
/// L + 1 tokens cannot happen (truncation keeps it within seq_len).
Batch collate(const std::vector<ProcessedSample>& samples, int64_t seq_len, int64_t pad_id, bool pad_to_longest);

/// Each row of `ids` (int64 [B, L]) decoded, runs of two or more `<|end_of_text|>` or `<|image|>` shortened to
/// "<|image|>..xN" (PLM's show_first_batch: MllmPaddingCollator.prettify_decoded_text).
std::vector<std::string> decoded_rows(const at::Tensor& ids, const text::Tokenizer& tokenizer);

}  // namespace plm::data
