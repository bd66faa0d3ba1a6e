// Batching processed samples exactly as PLM's MllmPaddingCollator (docs/reference.md 3.3).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "plm/data/preprocess.h"

namespace plm::data {

/// A batch of samples in B rows of length L (model.max_seqlen, or the longest row with pad_to_longest): one sample
/// per row as PLM's collator, or, packed (data/packing.h), several samples per row, each attending only to itself.
/// The per-sample fields (media, media_type, num_chunks, sample_ids, slots) list the samples row by row, in their
/// order within the row, which is also the order of their <|image|> positions in row-major order.
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
  int64_t sample_tokens = 0;            // the samples' own tokens: every row's positions minus its padding
  // Packed batches only (both empty otherwise: one sample per row, at positions 0..L-1):
  at::Tensor positions;                        // int64 [B, L]: each token's position in its own sample (RoPE);
                                               // a row's padding counts from 0 too
  std::vector<std::vector<int64_t>> segments;  // per row: its samples' token counts in order; the rest of the row
                                               // (padding) is one more sequence of its own

  /// The tokens MFU counts as computed: every position of an unpacked batch (the reference's convention), only the
  /// samples' tokens of a packed one (its padding excluded).
  int64_t useful_tokens() const;
  /// Sum over the sequences MFU counts of their length squared (attention's work is proportional to it): B x L x L
  /// unpacked, the samples' lengths squared packed.
  int64_t attended_pairs() const;
  bool packed() const { return !segments.empty(); }
  /// Samples in the batch.
  int64_t samples() const { return static_cast<int64_t>(sample_ids.size()); }
};

/// Collates; `pad_id` replaces every unset input and label (PLM: 128001, <|end_of_text|>). A sample longer than
/// L + 1 tokens cannot happen (truncation keeps it within seq_len). `pack`: the samples go into the rows of
/// first_fit_decreasing over their token counts (ids - 1), each at positions 0.. of its own; the same inputs,
/// labels and loss positions per sample as unpacked, and no row that is only padding.
Batch collate(const std::vector<ProcessedSample>& samples, int64_t seq_len, int64_t pad_id, bool pad_to_longest,
              bool pack = false);

/// Each row of `ids` (int64 [B, L]) decoded, runs of two or more `<|end_of_text|>` or `<|image|>` shortened to
/// "<|image|>..xN" (PLM's show_first_batch: MllmPaddingCollator.prettify_decoded_text).
std::vector<std::string> decoded_rows(const at::Tensor& ids, const text::Tokenizer& tokenizer);

}  // namespace plm::data
