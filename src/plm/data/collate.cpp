#include "plm/data/collate.h"

namespace plm::data {

Batch collate(const std::vector<ProcessedSample>& samples, int64_t seq_len, int64_t pad_id, bool pad_to_longest) {
  const auto b = static_cast<int64_t>(samples.size());
  int64_t len = seq_len;
  if (pad_to_longest) {
    len = 1;
    for (const auto& s : samples) len = std::max<int64_t>(len, static_cast<int64_t>(s.ids.size()) - 1);
  }
  Batch batch;
  at::Tensor input = at::full({b, len}, -1, at::kLong), labels = at::full({b, len}, -1, at::kLong);
  batch.image_pos_index = at::full({b, len}, -1, at::kLong);
  auto in_a = input.accessor<int64_t, 2>();
  auto lab_a = labels.accessor<int64_t, 2>();
  auto pos_a = batch.image_pos_index.accessor<int64_t, 2>();
  std::vector<at::Tensor> media, text_flags;
  for (int64_t i = 0; i < b; ++i) {
    const ProcessedSample& s = samples[i];
    const auto n = static_cast<int64_t>(s.ids.size());
    TORCH_CHECK(n - 1 <= len, "a sample of ", n, " tokens does not fit a batch of length ", len);
    for (int64_t p = 0; p + 1 < n; ++p) in_a[i][p] = s.ids[p];
    for (const int64_t j : s.response_pos)
      if (j >= 1) lab_a[i][j - 1] = s.ids[j];
    for (size_t k = 0; k < s.image_pos.size(); ++k)
      if (s.image_pos[k] < len) pos_a[i][s.image_pos[k]] = static_cast<int64_t>(k);
    media.push_back(s.media);
    text_flags.push_back(at::full({s.media.size(0)}, s.media_type == "text", at::kBool));
    batch.media_type.push_back(s.media_type);
    batch.num_chunks.push_back(s.media.size(0));
    batch.sample_ids.push_back(s.id);
    batch.slots.push_back(s.slot);
  }
  batch.loss_mask = labels != -1;
  batch.input_ids = input.masked_fill(input == -1, pad_id);
  batch.labels = labels.masked_fill(labels == -1, pad_id);
  batch.images = at::cat(media, 0);
  batch.chunk_has_text = at::cat(text_flags, 0);
  return batch;
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
