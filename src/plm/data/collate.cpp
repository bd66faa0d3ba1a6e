#include "plm/data/collate.h"

#include "plm/data/packing.h"

namespace plm::data {

Batch collate(const std::vector<ProcessedSample>& samples, int64_t seq_len, int64_t pad_id, bool pad_to_longest,
              bool pack) {
  std::vector<int64_t> lengths;  // tokens a sample takes in a row: its ids but the last (a label only)
  for (const auto& s : samples) lengths.push_back(std::max<int64_t>(static_cast<int64_t>(s.ids.size()) - 1, 0));
  std::vector<std::vector<size_t>> rows;
  if (pack) {
    rows = first_fit_decreasing(lengths, seq_len);
  } else {
    for (size_t i = 0; i < samples.size(); ++i) rows.push_back({i});
  }
  int64_t len = seq_len;
  if (pad_to_longest) {
    len = 1;
    for (const auto& row : rows) {
      int64_t fill = 0;
      for (const size_t i : row) fill += lengths[i];
      len = std::max(len, fill);
    }
  }
  const auto b = static_cast<int64_t>(rows.size());
  Batch batch;
  at::Tensor input = at::full({b, len}, -1, at::kLong), labels = at::full({b, len}, -1, at::kLong);
  batch.image_pos_index = at::full({b, len}, -1, at::kLong);
  if (pack) batch.positions = at::empty({b, len}, at::kLong);
  auto in_a = input.accessor<int64_t, 2>();
  auto lab_a = labels.accessor<int64_t, 2>();
  auto pos_a = batch.image_pos_index.accessor<int64_t, 2>();
  std::vector<at::Tensor> media, text_flags;
  for (int64_t r = 0; r < b; ++r) {
    int64_t offset = 0;
    std::vector<int64_t> segments;
    for (const size_t i : rows[static_cast<size_t>(r)]) {
      const ProcessedSample& s = samples[i];
      const int64_t n = lengths[i];
      TORCH_CHECK(offset + n <= len, "a sample of ", n + 1, " tokens does not fit a batch of length ", len);
      for (int64_t p = 0; p < n; ++p) in_a[r][offset + p] = s.ids[p];
      for (const int64_t j : s.response_pos)
        if (j >= 1) lab_a[r][offset + j - 1] = s.ids[j];
      // Unpacked, as the reference: any position inside the row (one past the inputs is padding); packed, only the
      // sample's own inputs, so that no image slot lands in the next sample.
      const int64_t limit = pack ? n : len;
      for (size_t k = 0; k < s.image_pos.size(); ++k)
        if (s.image_pos[k] < limit) pos_a[r][offset + s.image_pos[k]] = static_cast<int64_t>(k);
      if (pack) batch.positions[r].narrow(0, offset, n).copy_(at::arange(n, at::kLong));
      segments.push_back(n);
      offset += n;
      batch.sample_tokens += n;
      media.push_back(s.media);
      text_flags.push_back(at::full({s.media.size(0)}, s.media_type == "text", at::kBool));
      batch.media_type.push_back(s.media_type);
      batch.num_chunks.push_back(s.media.size(0));
      batch.sample_ids.push_back(s.id);
      batch.slots.push_back(s.slot);
    }
    if (pack) {
      if (offset < len) batch.positions[r].narrow(0, offset, len - offset).copy_(at::arange(len - offset, at::kLong));
      batch.segments.push_back(std::move(segments));
    }
  }
  batch.loss_mask = labels != -1;
  batch.input_ids = input.masked_fill(input == -1, pad_id);
  batch.labels = labels.masked_fill(labels == -1, pad_id);
  batch.images = at::cat(media, 0);
  batch.chunk_has_text = at::cat(text_flags, 0);
  return batch;
}

int64_t Batch::useful_tokens() const {
  return packed() ? sample_tokens : input_ids.numel();
}

int64_t Batch::attended_pairs() const {
  if (!packed()) return input_ids.numel() * input_ids.size(1);
  int64_t n = 0;
  for (const auto& row : segments)
    for (const int64_t s : row) n += s * s;
  return n;
}

std::vector<std::string> decoded_rows(const at::Tensor& ids, const text::Tokenizer& tokenizer) {
  std::vector<std::string> rows;
  const at::Tensor cpu = ids.to(at::kCPU, at::kLong).contiguous();
  for (int64_t b = 0; b < cpu.size(0); ++b) {
    const int64_t* p = cpu[b].data_ptr<int64_t>();
    std::string text = tokenizer.decode(std::vector<text::TokenId>(p, p + cpu.size(1)));
    for (const std::string token : {"<|end_of_text|>", "<|image|>"}) {
      std::string out;
      for (size_t at = 0; at < text.size();) {
        size_t n = 0;
        while (text.compare(at + n * token.size(), token.size(), token) == 0) ++n;
        if (n >= 2) {
          out += token + "..x" + std::to_string(n);
          at += n * token.size();
        } else if (n == 1) {
          out += token;
          at += token.size();
        } else {
          out += text[at++];
        }
      }
      text = std::move(out);
    }
    rows.push_back(std::move(text));
  }
  return rows;
}

}  // namespace plm::data
